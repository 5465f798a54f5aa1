/*
 * loadgen_http.c: incremental parsing of a response: the head, Content-Length,
 * chunked or close-delimited framing, and the "data: <ts> <seq>" lines of the
 * origin's SSE events. See loadgen.h.
 */
#include "loadgen.h"

static void sse_dispatch(struct conn *c, uint64_t recv)
{
    if (!c->ev_has_ts) return;
    c->ev_has_ts = false;
    events++;
    c->events_in_resp++;
    /* A stamp from the future would mean a clock bug; count it as zero. */
    hist_record(latency_hist, recv > c->ts ? recv - c->ts : 0);
    if (c->ev_has_seq) {
        if (c->seq != c->expect_seq) err_sequence++;
        c->expect_seq = c->seq + 1;
    }
    c->ev_has_seq = false;
}

/* Feeds event-stream bytes. Only "data: <ts> <seq> ..." lines are decoded;
 * the padding is skipped with memchr so a long event costs little. */
static void sse_feed(struct conn *c, const char *p, size_t n, uint64_t recv)
{
    static const char prefix[] = "data: ";
    const char *end = p + n;
    while (p < end) {
        char ch = *p;
        switch (c->ss) {
        case S_START:
            p++;
            if (ch == '\n') sse_dispatch(c, recv);
            else if (ch == 'd') {
                c->ss = S_PREFIX;
                c->prefix_i = 1;
            } else if (ch != '\r') c->ss = S_SKIP;
            break;
        case S_PREFIX:
            if (ch == prefix[c->prefix_i]) {
                p++;
                if (++c->prefix_i == sizeof prefix - 1) {
                    c->ss = S_TS;
                    c->ts = 0;
                }
            } else c->ss = S_SKIP;
            break;
        case S_TS:
            if (ch >= '0' && ch <= '9') {
                c->ts = c->ts * 10 + (uint64_t)(ch - '0');
                p++;
            } else {
                c->ev_has_ts = true;
                if (ch == ' ') {
                    p++;
                    c->ss = S_SEQ;
                    c->seq = 0;
                } else c->ss = S_SKIP;
            }
            break;
        case S_SEQ:
            if (ch >= '0' && ch <= '9') {
                c->seq = c->seq * 10 + (uint64_t)(ch - '0');
                p++;
            } else {
                c->ev_has_seq = true;
                c->ss = S_SKIP;
            }
            break;
        case S_SKIP: {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) return;
            p = nl + 1;
            c->ss = S_START;
            break;
        }
        }
    }
}

static void body_data(struct conn *c, const char *p, size_t n, uint64_t recv)
{
    body_bytes += n;
    if (c->sse) sse_feed(c, p, n, recv);
}

/* Consumes body bytes. Returns how many were used; sets *done when the
 * response ended (the rest of the buffer, if any, is not this response's). */
size_t body_feed(struct conn *c, const char *p, size_t n, uint64_t recv, bool *done, bool *bad)
{
    *done = *bad = false;
    if (!c->chunked) {
        if (c->content_length < 0) { /* close-delimited */
            body_data(c, p, n, recv);
            return n;
        }
        size_t take = n < c->left ? n : (size_t)c->left;
        body_data(c, p, take, recv);
        c->left -= take;
        *done = c->left == 0;
        return take;
    }
    const char *s = p, *end = p + n;
    while (s < end) {
        char ch = *s;
        switch (c->ks) {
        case K_SIZE: {
            int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                                                       : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
            if (d >= 0) {
                if (c->chunk_left >> 60) goto bad;
                c->chunk_left = c->chunk_left * 16 + (uint64_t)d;
            } else if (ch == ';' || ch == ' ') c->ks = K_EXT;
            else if (ch == '\r') c->ks = K_SIZE_LF;
            else goto bad;
            s++;
            break;
        }
        case K_EXT:
            if (ch == '\r') c->ks = K_SIZE_LF;
            s++;
            break;
        case K_SIZE_LF:
            if (ch != '\n') goto bad;
            s++;
            c->ks = c->chunk_left ? K_DATA : K_TRAILER;
            break;
        case K_DATA: {
            size_t take = (size_t)(end - s) < c->chunk_left ? (size_t)(end - s) : (size_t)c->chunk_left;
            body_data(c, s, take, recv);
            s += take;
            c->chunk_left -= take;
            if (!c->chunk_left) c->ks = K_DATA_CR;
            break;
        }
        case K_DATA_CR:
            if (ch != '\r') goto bad;
            s++;
            c->ks = K_DATA_LF;
            break;
        case K_DATA_LF:
            if (ch != '\n') goto bad;
            s++;
            c->ks = K_SIZE;
            break;
        case K_TRAILER:
            s++;
            if (ch == '\r') c->ks = K_FINAL_LF;
            else c->ks = K_TRAILER_LINE;
            break;
        case K_TRAILER_LINE:
            s++;
            if (ch == '\n') c->ks = K_TRAILER;
            break;
        case K_FINAL_LF:
            if (ch != '\n') goto bad;
            s++;
            *done = true;
            return (size_t)(s - p);
        }
    }
    return n;
bad:
    *bad = true;
    return (size_t)(s - p);
}
/* Parses the completed head in c->head. Returns the status code, or -1. */
int parse_head(struct conn *c, size_t len)
{
    if (len < 12 || memcmp(c->head, "HTTP/1.", 7) != 0) return -1;
    int status = atoi(c->head + 9);
    bool http10 = c->head[7] == '0';
    bool keep_alive_hdr = false;
    c->close_after = http10;
    char *line = memmem(c->head, len, "\r\n", 2) + 2;
    char *end = c->head + len - 2;
    while (line < end) {
        char *e = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        size_t l = (size_t)(e - line);
        char *colon = memchr(line, ':', l);
        if (colon) {
            char *v = colon + 1;
            size_t vl = l - (size_t)(v - line);
            if (header_is(line, l, "transfer-encoding")) c->chunked = value_has(v, vl, "chunked");
            else if (header_is(line, l, "content-length")) c->content_length = strtoll(v, NULL, 10);
            else if (header_is(line, l, "content-type")) c->sse = value_has(v, vl, "text/event-stream");
            else if (header_is(line, l, "connection")) {
                if (value_has(v, vl, "close")) c->close_after = true;
                if (value_has(v, vl, "keep-alive")) keep_alive_hdr = true;
            }
        }
        line = e + 2;
    }
    if (http10 && keep_alive_hdr) c->close_after = false;
    if (c->chunked) c->content_length = -1;
    if (!c->chunked && c->content_length < 0) c->close_after = true; /* body ends at EOF */
    if (c->content_length >= 0) c->left = (uint64_t)c->content_length;
    return status;
}
