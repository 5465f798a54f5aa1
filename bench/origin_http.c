/*
 * origin_http.c: the benchmark origin's HTTP side: parses a request head,
 * starts its response (/sse, /bytes, /small, /echo, errors) and advances each
 * connection as far as its socket allows. See origin.h.
 */
#include "origin.h"

static char scratch[SCRATCH_CAP];
char *bulk;
char pad[MAX_EVENT];

static uint64_t query_u64(const char *q, const char *qend, const char *key, uint64_t dflt)
{
    size_t kl = strlen(key);
    const char *p = q;
    while (p && p < qend) {
        if ((size_t)(qend - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
            return strtoull(p + kl + 1, NULL, 10);
        }
        p = memchr(p, '&', (size_t)(qend - p));
        if (p) p++;
    }
    return dflt;
}
/* Writes the next event (with ?batch=K the next K events, each its own chunk)
 * and, after the final one, the last-chunk marker, all in a single write.
 * Each event is stamped just before it is formatted. */
static bool send_event(struct conn *c)
{
    uint64_t k = c->batch;
    if (c->ev_total && c->ev_total - c->ev_sent < k) k = c->ev_total - c->ev_sent;
    size_t n = 0;
    for (uint64_t i = 0; i < k; i++) {
        char head[64];
        int hl = snprintf(head, sizeof head, "data: %" PRIu64 " %" PRIu64 " ", now_ns(), c->ev_sent);
        size_t min_len = (size_t)hl + 2;
        size_t body_len = c->ev_size < min_len ? min_len : c->ev_size;
        n += (size_t)snprintf(scratch + n, 24, "%zx\r\n", body_len);
        memcpy(scratch + n, head, (size_t)hl);
        memcpy(scratch + n + (size_t)hl, pad, body_len - min_len);
        memcpy(scratch + n + body_len - 2, "\n\n\r\n", 4);
        n += body_len + 2;
        c->ev_sent++;
    }
    if (c->ev_total && c->ev_sent == c->ev_total) {
        memcpy(scratch + n, "0\r\n\r\n", 5);
        n += 5;
    }
    return send_all(c, scratch, n);
}

/* The head of a /bytes or /echo response: c->left bytes of application/octet-stream. */
static int octet_stream_head(char *buf, size_t cap, const struct conn *c)
{
    return snprintf(buf, cap,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Length: %" PRIu64 "\r\n%s\r\n",
                    c->left, c->keep_alive ? "" : "Connection: close\r\n");
}

static const char small_response[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

/* Parses one request head from c->in and starts its response. Returns 1 when
 * a response started, 0 when more input is needed, -1 when closed. */
static int start_request(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len == IN_CAP) {
            static const char r431[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            c->keep_alive = false;
            if (!send_all(c, r431, sizeof r431 - 1)) return -1;
            c->in_len = 0;
            c->st = ST_FLUSH;
            return 1;
        }
        return 0;
    }
    size_t head_len = (size_t)(end - c->in) + 4;
    char *line_end = memmem(c->in, head_len, "\r\n", 2);
    char *sp1 = memchr(c->in, ' ', (size_t)(line_end - c->in));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (!sp1 || !sp2) {
        conn_close(c);
        return -1;
    }
    const char *method = c->in;
    size_t method_len = (size_t)(sp1 - c->in);
    const char *target = sp1 + 1;
    size_t target_len = (size_t)(sp2 - target);
    bool http10 = (size_t)(line_end - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;

    int64_t content_length = -1;
    bool chunked = false, conn_close_hdr = false, conn_keepalive_hdr = false;
    for (char *l = line_end + 2; l < end;) {
        char *e = memmem(l, (size_t)(end + 2 - l), "\r\n", 2);
        size_t len = (size_t)(e - l);
        const char *colon = memchr(l, ':', len);
        if (colon) {
            const char *v = colon + 1;
            size_t vlen = len - (size_t)(v - l);
            if (header_is(l, len, "content-length")) content_length = strtoll(v, NULL, 10);
            else if (header_is(l, len, "transfer-encoding")) chunked = value_has(v, vlen, "chunked");
            else if (header_is(l, len, "connection")) {
                conn_close_hdr = value_has(v, vlen, "close");
                conn_keepalive_hdr = value_has(v, vlen, "keep-alive");
            }
        }
        l = e + 2;
    }
    c->keep_alive = http10 ? conn_keepalive_hdr : !conn_close_hdr;

    const char *qmark = memchr(target, '?', target_len);
    size_t path_len = qmark ? (size_t)(qmark - target) : target_len;
    const char *q = qmark ? qmark + 1 : NULL, *qend = target + target_len;
#define PATH_IS(s) (path_len == sizeof(s) - 1 && memcmp(target, s, path_len) == 0)
#define METHOD_IS(s) (method_len == sizeof(s) - 1 && memcmp(method, s, method_len) == 0)

    /* Only /echo reads a body; any other request carrying one is answered and
     * the connection closed rather than parsing a body we would discard. */
    bool has_body = chunked || content_length > 0;
    if (has_body && !(METHOD_IS("POST") && PATH_IS("/echo"))) c->keep_alive = false;

    char hbuf[256];
    int hl;
    if (METHOD_IS("GET") && PATH_IS("/sse")) {
        c->ev_total = query_u64(q, qend, "events", 10);
        c->interval_ns = query_u64(q, qend, "interval_ms", 0) * 1000000u;
        uint64_t us = query_u64(q, qend, "interval_us", 0);
        if (us) c->interval_ns = us * 1000u;
        c->ev_size = (size_t)query_u64(q, qend, "size", 64);
        if (c->ev_size > MAX_EVENT) c->ev_size = MAX_EVENT;
        /* A framed event is its body (at least the 50-byte stamp line), a chunk-size
         * line of at most 8 bytes and CRLF; the batch must fit the scratch buffer
         * with the last-chunk marker. */
        uint64_t batch = query_u64(q, qend, "batch", 1);
        size_t framed = (c->ev_size < 64 ? 64 : c->ev_size) + 16;
        if (batch < 1) batch = 1;
        if (batch > MAX_BATCH) batch = MAX_BATCH;
        if (batch * framed > SCRATCH_CAP - 8) batch = (SCRATCH_CAP - 8) / framed;
        c->batch = (unsigned)batch;
        c->ev_sent = 0;
        hl = snprintf(hbuf, sizeof hbuf,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n%s\r\n%s",
                      c->keep_alive ? "" : "Connection: close\r\n",
                      c->ev_total == 0 ? "8\r\n: open\n\n\r\n" : "");
        c->st = ST_SSE;
        c->deadline = c->interval_ns ? now_ns() + c->interval_ns : 0;
    } else if (METHOD_IS("GET") && PATH_IS("/bytes")) {
        c->left = query_u64(q, qend, "n", 1024);
        hl = octet_stream_head(hbuf, sizeof hbuf, c);
        c->st = ST_BYTES;
    } else if (METHOD_IS("GET") && PATH_IS("/small")) {
        memcpy(hbuf, small_response, sizeof small_response - 1);
        hl = sizeof small_response - 1;
        c->st = ST_FLUSH;
    } else if (METHOD_IS("POST") && PATH_IS("/echo") && !chunked) {
        c->left = content_length > 0 ? (uint64_t)content_length : 0;
        hl = octet_stream_head(hbuf, sizeof hbuf, c);
        c->st = ST_ECHO;
    } else if (METHOD_IS("POST") && PATH_IS("/echo")) {
        static const char r411[] = "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        memcpy(hbuf, r411, sizeof r411 - 1);
        hl = sizeof r411 - 1;
        c->keep_alive = false;
        c->st = ST_FLUSH;
    } else {
        static const char r404[] = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n";
        memcpy(hbuf, r404, sizeof r404 - 1);
        hl = sizeof r404 - 1;
        c->st = ST_FLUSH;
    }
#undef PATH_IS
#undef METHOD_IS
    memmove(c->in, c->in + head_len, c->in_len - head_len);
    c->in_len -= head_len;
    if (!send_all(c, hbuf, (size_t)hl)) return -1;
    return 1;
}

/* Ends the current response: next request on a keep-alive connection, else
 * close. Returns false when the connection was closed. */
static bool finish_response(struct conn *c)
{
    c->st = ST_HEAD;
    heap_remove(c);
    if (!c->keep_alive) {
        conn_close(c);
        return false;
    }
    return true;
}

/* Advances a connection as far as the socket allows. Called for every epoll
 * event, expired timer and ready-list turn; all state lives in c. */
void progress(struct conn *c)
{
    int budget = WRITE_BUDGET;
    ready_del(c);
    for (;;) {
        if (c->pend_len) {
            if (!c->writable) return; /* EPOLLOUT will bring us back */
            if (!flush_pending(c)) return;
            if (c->pend_len) return;
        }
        switch (c->st) {
        case ST_HEAD: {
            int r = start_request(c);
            if (r < 0) return;
            if (r > 0) continue;
            if (!fill_input(c)) {
                conn_close(c);
                return;
            }
            if (c->read_eof) {
                conn_close(c);
                return;
            }
            if (memmem(c->in, c->in_len, "\r\n\r\n", 4) || c->in_len == IN_CAP) continue;
            return;
        }
        case ST_FLUSH:
            if (!finish_response(c)) return;
            continue;
        case ST_SSE:
            if (c->ev_total && c->ev_sent == c->ev_total) {
                if (!finish_response(c)) return;
                continue;
            }
            if (c->interval_ns) {
                uint64_t t = now_ns();
                if (t < c->deadline) {
                    if (c->heap_idx < 0) heap_push(c);
                    return;
                }
                /* Keep a fixed schedule; if we fell behind, do not burst to catch up. */
                c->deadline += c->interval_ns;
                if (c->deadline < t) c->deadline = t + c->interval_ns;
                if (!send_event(c)) return;
                if (c->heap_idx >= 0) heap_remove(c);
                continue;
            }
            if (!c->writable) return;
            if (budget-- == 0) {
                ready_add(c);
                return;
            }
            if (!send_event(c)) return;
            continue;
        case ST_BYTES: {
            if (c->left == 0) {
                if (!finish_response(c)) return;
                continue;
            }
            if (!c->writable) return;
            if (budget-- == 0) {
                ready_add(c);
                return;
            }
            size_t n = c->left < BULK_CHUNK ? (size_t)c->left : BULK_CHUNK;
            ssize_t w = write(c->fd, bulk, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) {
                    c->writable = false;
                    return;
                }
                conn_close(c);
                return;
            }
            c->left -= (uint64_t)w;
            if ((size_t)w < n) c->writable = false;
            continue;
        }
        case ST_ECHO: {
            if (c->left == 0) {
                if (!finish_response(c)) return;
                continue;
            }
            if (c->in_len == 0) {
                if (!fill_input(c)) {
                    conn_close(c);
                    return;
                }
                if (c->in_len == 0) {
                    if (c->read_eof) conn_close(c);
                    return;
                }
            }
            size_t n = c->in_len < c->left ? c->in_len : (size_t)c->left;
            c->left -= n;
            /* Copy out before compacting: a short write stashes from p. */
            char tmp[IN_CAP];
            memcpy(tmp, c->in, n);
            memmove(c->in, c->in + n, c->in_len - n);
            c->in_len -= n;
            if (!send_all(c, tmp, n)) return;
            continue;
        }
        }
    }
}

/* While a response streams, input is only watched for the client leaving; a
 * proxy that gives up on a stream must not keep the origin writing. */
void on_readable_streaming(struct conn *c, uint32_t ev)
{
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        conn_close(c);
        return;
    }
    if (!fill_input(c) || c->read_eof) conn_close(c);
}
