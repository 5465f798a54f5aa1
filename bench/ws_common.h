/*
 * ws_common.h: what the WebSocket origin (ws_origin.c) and load generator
 * (ws_loadgen.c) of scenario w share, header-only like bench_common.h: the
 * RFC 6455 handshake's Sec-WebSocket-Accept (SHA-1 and base64, written here
 * so the programs need nothing beyond libc), frame headers, the parser that
 * walks a byte stream frame by frame, and a log-linear latency histogram.
 */
#ifndef WS_COMMON_H
#define WS_COMMON_H

#include "bench_common.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_TEXT 0x1
#define WS_BINARY 0x2
#define WS_CLOSE 0x8
#define WS_PING 0x9
#define WS_PONG 0xA

/* ---- SHA-1 (FIPS 180-4), for the handshake only --------------------------- */

static inline uint32_t ws_rol(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static inline void ws_sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = ws_rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = ws_rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = ws_rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static inline void ws_sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) ws_sha1_block(h, msg + i);
    uint8_t tail[128] = {0};
    size_t rest = len - i;
    memcpy(tail, msg + i, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) tail[tl - 1 - j] = (uint8_t)(bits >> (8 * j));
    ws_sha1_block(h, tail);
    if (tl == 128) ws_sha1_block(h, tail + 64);
    for (int j = 0; j < 5; j++)
        out[4 * j] = (uint8_t)(h[j] >> 24), out[4 * j + 1] = (uint8_t)(h[j] >> 16),
        out[4 * j + 2] = (uint8_t)(h[j] >> 8), out[4 * j + 3] = (uint8_t)h[j];
}

/* Base64 (RFC 4648, padded) of n bytes into out (4 * ceil(n / 3) + 1 bytes). */
static inline void ws_base64(const uint8_t *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* Sec-WebSocket-Accept for a key (up to 60 bytes) into out (29 bytes). */
static inline void ws_accept(const char *key, size_t klen, char out[29])
{
    char buf[128];
    if (klen > 60) klen = 60;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
    uint8_t digest[20];
    ws_sha1((const uint8_t *)buf, klen + sizeof WS_GUID - 1, digest);
    ws_base64(digest, 20, out);
}

/* ---- frames ------------------------------------------------------------- */

/* Writes a final frame's header (FIN, opcode, length, the mask key when
 * `mask` is non-NULL) into out (up to 14 bytes); returns its length. */
static inline size_t ws_header(uint8_t *out, unsigned opcode, uint64_t len, const uint8_t *mask)
{
    size_t n = 0;
    out[n++] = (uint8_t)(0x80 | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[n++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8), out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--) out[n++] = (uint8_t)(len >> (8 * i));
    }
    if (mask) memcpy(out + n, mask, 4), n += 4;
    return n;
}

/* Incremental frame parser: feed it any slice of the stream; it keeps the
 * header it is in the middle of, the first WS_PREFIX payload bytes of each
 * frame (unmasked) and skips the rest arithmetically. */
#define WS_PREFIX 48
struct ws_parser {
    uint8_t hdr[14];
    unsigned hdr_len, hdr_need;
    unsigned opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t len, done;      /* payload length and bytes of it seen */
    uint8_t pfx[WS_PREFIX];  /* the payload's first bytes, unmasked */
    unsigned pfx_len;
};

/* Called once per whole frame: opcode, payload length, its first bytes. */
typedef void (*ws_frame_fn)(void *ctx, unsigned opcode, uint64_t len, const uint8_t *pfx, unsigned pfx_len);

/* Returns false on a frame this parser does not take (RSV bits, a fragment,
 * a length over 2^62). */
static inline bool ws_feed(struct ws_parser *p, const uint8_t *b, size_t n, ws_frame_fn fn, void *ctx)
{
    size_t i = 0;
    while (i < n) {
        if (p->hdr_need == 0) p->hdr_need = 2, p->hdr_len = 0;
        if (p->hdr_len < p->hdr_need) {
            while (i < n && p->hdr_len < p->hdr_need) {
                p->hdr[p->hdr_len++] = b[i++];
                if (p->hdr_len == 2) {
                    if ((p->hdr[0] & 0xF0) != 0x80) return false; /* FIN only, no RSV */
                    unsigned l7 = p->hdr[1] & 0x7F;
                    p->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (p->hdr[1] & 0x80 ? 4 : 0);
                }
            }
            if (p->hdr_len < p->hdr_need) return true;
            unsigned l7 = p->hdr[1] & 0x7F, o = 2;
            p->opcode = p->hdr[0] & 0x0F;
            p->masked = p->hdr[1] & 0x80;
            if (l7 == 126) p->len = (uint64_t)p->hdr[2] << 8 | p->hdr[3], o = 4;
            else if (l7 == 127) {
                p->len = 0;
                for (int k = 0; k < 8; k++) p->len = p->len << 8 | p->hdr[2 + k];
                if (p->len >> 62) return false;
                o = 10;
            } else p->len = l7;
            if (p->masked) memcpy(p->mask, p->hdr + o, 4);
            p->done = 0, p->pfx_len = 0;
        }
        size_t take = n - i;
        if ((uint64_t)take > p->len - p->done) take = (size_t)(p->len - p->done);
        for (size_t k = 0; k < take && p->pfx_len < WS_PREFIX; k++) {
            uint8_t v = b[i + k];
            if (p->masked) v ^= p->mask[(p->done + k) & 3];
            p->pfx[p->pfx_len++] = v;
        }
        p->done += take;
        i += take;
        if (p->done == p->len) {
            fn(ctx, p->opcode, p->len, p->pfx, p->pfx_len);
            p->hdr_need = 0;
        }
    }
    return true;
}

/* "<ns> <seq>" at the start of a payload prefix; false when absent. */
static inline bool ws_stamp(const uint8_t *pfx, unsigned n, uint64_t *ts, uint64_t *seq)
{
    unsigned i = 0;
    uint64_t a = 0, b = 0;
    if (!n || pfx[0] < '0' || pfx[0] > '9') return false;
    while (i < n && pfx[i] >= '0' && pfx[i] <= '9') a = a * 10 + (pfx[i++] - '0');
    if (i >= n || pfx[i++] != ' ' || i >= n || pfx[i] < '0' || pfx[i] > '9') return false;
    while (i < n && pfx[i] >= '0' && pfx[i] <= '9') b = b * 10 + (pfx[i++] - '0');
    *ts = a, *seq = b;
    return true;
}

/* ---- histogram: log-linear, 128 sub-buckets per power of two (< 0.8 %) --- */

#define WS_SUB_BITS 7
#define WS_SUB (1u << WS_SUB_BITS)
#define WS_NBUCKETS ((64 - WS_SUB_BITS + 1) * WS_SUB)
struct ws_hist {
    uint64_t counts[WS_NBUCKETS];
    uint64_t count, max, sum;
};

static inline unsigned ws_bucket(uint64_t v)
{
    if (v < WS_SUB) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v), shift = msb - WS_SUB_BITS;
    return (shift + 1) * WS_SUB + (unsigned)((v >> shift) - WS_SUB);
}

static inline void ws_hist_add(struct ws_hist *h, uint64_t v)
{
    h->counts[ws_bucket(v)]++;
    h->count++, h->sum += v;
    if (v > h->max) h->max = v;
}

static inline uint64_t ws_hist_pct(const struct ws_hist *h, double p)
{
    if (!h->count) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999), seen = 0;
    if (rank < 1) rank = 1;
    for (unsigned i = 0; i < WS_NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            if (i < WS_SUB) return i;
            unsigned shift = i / WS_SUB - 1;
            uint64_t v = ((uint64_t)(i % WS_SUB + WS_SUB) << shift) + ((1ull << shift) >> 1);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* Prints "NAME":{count, mean, p50, p90, p99, p999, max} in µs, and a comma. */
static inline void ws_hist_print(const char *name, const struct ws_hist *h)
{
    printf("\"%s\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"p999\":%.1f,\"max\":%.1f},",
           name, h->count, h->count ? (double)h->sum / (double)h->count / 1e3 : 0, ws_hist_pct(h, 50) / 1e3,
           ws_hist_pct(h, 90) / 1e3, ws_hist_pct(h, 99) / 1e3, ws_hist_pct(h, 99.9) / 1e3, h->max / 1e3);
}

#endif
