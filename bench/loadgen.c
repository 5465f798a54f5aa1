/*
 * loadgen.c: the benchmark client. One thread, one epoll set, C concurrent
 * keep-alive HTTP/1.1 connections, incremental parsing of the response head,
 * chunked framing and SSE, so a connection costs a struct and no buffers.
 *
 * Every SSE event from bench/origin.c carries its send time (CLOCK_MONOTONIC,
 * ns) and a sequence number. Latency = time the read() that delivered the
 * event returned - send time; it goes into a log-linear histogram (HDR-style:
 * 128 linear sub-buckets per power of two, < 0.8 % relative error). The
 * sequence numbers and the expected event count catch lost, reordered or
 * truncated streams, which a proxy benchmark must not silently average over.
 *
 * Modes:
 *   sse    C connections each make R requests to --path (an /sse URL) and
 *          stream them to the end, or until --duration.
 *   bytes  same with a Content-Length body (/bytes?n=N): reports MB/s.
 *   hold   opens streams up to each of --steps (default: C) with at most
 *          --connect-batch connects in flight; when a step's streams all have
 *          their response head it prints {"step":...} on stderr and waits for
 *          SIGUSR1 (next step) or SIGTERM/SIGINT/--duration (finish).
 *
 * At the end it prints one JSON object on stdout: counts, rates, latency
 * percentiles, errors and its own CPU time (getrusage), so the caller can tell
 * whether the load side, rather than the target, was the limit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_CAP 4096
#define RBUF_CAP (1u << 20)
/* Reads per connection per wakeup; a fast stream yields after this so the
 * others are not starved (edge-triggered: it goes on the ready list). */
#define READ_BUDGET 16
#define MAX_EVENTS 512
#define MAX_STEPS 16

/* ---- histogram ---------------------------------------------------------- */

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUB)

static uint64_t hist[NBUCKETS];
static uint64_t hist_count, hist_max, hist_sum;

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (unsigned)((v >> shift) - SUB);
}

/* Midpoint of the bucket's value range. */
static uint64_t bucket_value(unsigned i)
{
    if (i < SUB) return i;
    unsigned shift = i / SUB - 1;
    uint64_t lo = (uint64_t)(i % SUB + SUB) << shift;
    return lo + ((1ull << shift) >> 1);
}

static void hist_record(uint64_t v)
{
    hist[bucket_of(v)]++;
    hist_count++;
    hist_sum += v;
    if (v > hist_max) hist_max = v;
}

static uint64_t hist_pct(double p)
{
    if (!hist_count) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)hist_count + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            uint64_t v = bucket_value(i);
            return v > hist_max ? hist_max : v;
        }
    }
    return hist_max;
}

/* ---- connections -------------------------------------------------------- */

enum cstate {
    C_IDLE,       /* no socket (not opened yet, or finished) */
    C_CONNECTING, /* connect() in progress */
    C_HEAD,       /* request (partly) sent, reading the response head */
    C_BODY,       /* reading the body */
};

enum chunk_state { K_SIZE, K_EXT, K_SIZE_LF, K_DATA, K_DATA_CR, K_DATA_LF, K_TRAILER, K_TRAILER_LINE, K_FINAL_LF };
enum sse_state { S_START, S_PREFIX, S_TS, S_SEQ, S_SKIP };

struct conn {
    int fd;
    enum cstate st;
    bool on_ready;
    bool connecting;  /* counted in `inflight`: connect or first head pending */
    bool established; /* hold: response head seen */
    size_t req_off;   /* bytes of the current request already written */
    unsigned requests_done;

    char head[HEAD_CAP];
    size_t head_len;

    /* response framing */
    bool chunked, sse, close_after;
    int64_t content_length; /* -1: none (chunked or close-delimited) */
    uint64_t left;          /* Content-Length bytes still expected */
    enum chunk_state ks;
    uint64_t chunk_left;

    /* SSE parser: only the fields the origin writes are decoded */
    enum sse_state ss;
    unsigned prefix_i;
    uint64_t ts, seq;
    bool ev_has_ts, ev_has_seq;
    uint64_t expect_seq, events_in_resp;
};

static const char *opt_target = "127.0.0.1:8080", *opt_path = NULL, *opt_mode = "sse", *opt_label = "";
static unsigned opt_c = 1, opt_r = 1, opt_batch = 256;
static double opt_duration = 60, opt_step_timeout = 60, opt_stagger_ms = 0;
static unsigned steps[MAX_STEPS], nsteps;

static struct sockaddr_in target_addr;
static char request[2048];
static size_t request_len;
static uint64_t expect_events; /* per /sse response; 0 = unknown or unlimited */
static uint64_t expect_bytes;  /* per /bytes response; 0 = unknown */
static bool mode_hold, mode_bytes;

static int ep, sfd;
static struct conn *conns;
/* Two lists, so a connection that yields again while the list is being
 * worked through waits for the next turn instead of being overwritten. */
static struct conn **ready, **ready_next;
static size_t nready;
static char rbuf[RBUF_CAP];

static uint64_t t_start;
static uint64_t events, body_bytes, wire_bytes, reads, requests_completed, reconnects;
static uint64_t err_connect, err_status, err_truncated, err_sequence, err_short, err_parse, err_dropped;
static unsigned open_conns, inflight, established, failed, target_streams;
static bool stopping;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void ready_push(struct conn *c)
{
    if (c->on_ready) return;
    c->on_ready = true;
    ready[nready++] = c;
}

static void reset_response(struct conn *c)
{
    c->head_len = 0;
    c->chunked = c->sse = c->close_after = false;
    c->content_length = -1;
    c->left = 0;
    c->ks = K_SIZE;
    c->chunk_left = 0;
    c->ss = S_START;
    c->ev_has_ts = c->ev_has_seq = false;
    c->expect_seq = 0;
    c->events_in_resp = 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd < 0) return;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    if (c->connecting) inflight--;
    c->connecting = false;
    if (c->established) established--;
    c->established = false;
    c->st = C_IDLE;
    open_conns--;
}

/* Counts a failure and closes; a held stream that fails stays counted so a
 * hold step can finish instead of waiting for it forever. */
static void conn_fail(struct conn *c, uint64_t *counter)
{
    (*counter)++;
    if (mode_hold) failed++;
    conn_close(c);
}

static bool send_request(struct conn *c)
{
    while (c->req_off < request_len) {
        ssize_t w = write(c->fd, request + c->req_off, request_len - c->req_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return true; /* EPOLLOUT resumes */
            conn_fail(c, &err_truncated);
            return false;
        }
        c->req_off += (size_t)w;
    }
    return true;
}

static void conn_open(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        /* Out of fds or memory: count it like a refused connect. */
        err_connect++;
        if (mode_hold) failed++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->st = C_CONNECTING;
    c->req_off = 0;
    reset_response(c);
    open_conns++;
    inflight++;
    c->connecting = true;
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
    if (connect(fd, (struct sockaddr *)&target_addr, sizeof target_addr) < 0 && errno != EINPROGRESS) {
        conn_fail(c, &err_connect);
    }
}

/* The response ended cleanly: next request, reconnect, or done. */
static void response_done(struct conn *c)
{
    requests_completed++;
    c->requests_done++;
    if (c->sse && expect_events && c->events_in_resp != expect_events) err_short++;
    if (mode_bytes && expect_bytes && c->content_length >= 0 && (uint64_t)c->content_length != expect_bytes) err_short++;
    if (mode_hold) {
        /* A held stream is not supposed to end. */
        conn_fail(c, &err_dropped);
        return;
    }
    if (c->requests_done >= opt_r || stopping) {
        conn_close(c);
        return;
    }
    if (c->close_after) {
        reconnects++;
        conn_close(c);
        conn_open(c);
        return;
    }
    c->st = C_HEAD;
    c->req_off = 0;
    reset_response(c);
    send_request(c);
}

static void sse_dispatch(struct conn *c, uint64_t recv)
{
    if (!c->ev_has_ts) return;
    c->ev_has_ts = false;
    events++;
    c->events_in_resp++;
    /* A stamp from the future would mean a clock bug; count it as zero. */
    hist_record(recv > c->ts ? recv - c->ts : 0);
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
static size_t body_feed(struct conn *c, const char *p, size_t n, uint64_t recv, bool *done, bool *bad)
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

static bool header_is(const char *line, size_t len, const char *name)
{
    size_t nl = strlen(name);
    return len > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0;
}

static bool value_has(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= len; i++)
        if (strncasecmp(v + i, token, tl) == 0) return true;
    return false;
}

/* Parses the completed head in c->head. Returns the status code, or -1. */
static int parse_head(struct conn *c, size_t len)
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

/* Ends a response whose last byte was just parsed, with `rest` bytes of the
 * read left over. Returns whether the caller may keep reading this fd. */
static bool finish(struct conn *c, size_t rest)
{
    int fd = c->fd;
    response_done(c);
    /* Requests are not pipelined, so nothing may follow a response. */
    if (rest) {
        err_parse++;
        if (c->fd == fd && c->fd >= 0) conn_close(c);
        return false;
    }
    /* A reconnect may reuse the fd number but is a new socket in C_CONNECTING. */
    return c->fd >= 0 && c->st == C_HEAD;
}

/* Handles one read's bytes. Returns false when this socket must not be read
 * any further (closed, replaced, or finished). */
static bool on_bytes(struct conn *c, const char *p, size_t n, uint64_t recv)
{
    while (n) {
        if (c->st == C_HEAD) {
            size_t old = c->head_len;
            size_t take = n < HEAD_CAP - old ? n : HEAD_CAP - old;
            memcpy(c->head + old, p, take);
            c->head_len += take;
            size_t from = old >= 3 ? old - 3 : 0;
            char *e = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!e) {
                if (c->head_len == HEAD_CAP) {
                    conn_fail(c, &err_parse);
                    return false;
                }
                return true;
            }
            size_t hl = (size_t)(e - c->head) + 4;
            size_t used = hl - old;
            p += used;
            n -= used;
            int status = parse_head(c, hl);
            if (status < 0) {
                conn_fail(c, &err_parse);
                return false;
            }
            if (status != 200) {
                conn_fail(c, &err_status);
                return false;
            }
            c->st = C_BODY;
            if (c->connecting) {
                c->connecting = false;
                inflight--;
            }
            if (mode_hold && !c->established) {
                c->established = true;
                established++;
            }
            if (!c->chunked && c->content_length == 0) return finish(c, n);
            continue;
        }
        if (c->st != C_BODY) { /* bytes with no request outstanding */
            conn_fail(c, &err_parse);
            return false;
        }
        bool done, bad;
        size_t used = body_feed(c, p, n, recv, &done, &bad);
        p += used;
        n -= used;
        if (bad) {
            conn_fail(c, &err_parse);
            return false;
        }
        if (done) return finish(c, n);
    }
    return true;
}

static void on_readable(struct conn *c)
{
    for (int i = 0; i < READ_BUDGET; i++) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r > 0) {
            uint64_t recv = now_ns();
            wire_bytes += (uint64_t)r;
            reads++;
            if (!on_bytes(c, rbuf, (size_t)r, recv)) return;
            continue;
        }
        if (r == 0) {
            if (c->st == C_BODY && !c->chunked && c->content_length < 0) {
                response_done(c); /* close-delimited body ends here; close_after is set */
            } else if (mode_hold && c->established) conn_fail(c, &err_dropped);
            else conn_fail(c, &err_truncated);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        if (c->st == C_CONNECTING) conn_fail(c, &err_connect);
        else conn_fail(c, mode_hold && c->established ? &err_dropped : &err_truncated);
        return;
    }
    ready_push(c);
}

static void on_event(struct conn *c, uint32_t ev)
{
    if (c->fd < 0) return;
    if (c->st == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            conn_fail(c, &err_connect);
            return;
        }
        c->st = C_HEAD;
    }
    if ((ev & EPOLLOUT) && c->req_off < request_len && !send_request(c)) return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
}

static void parse_target(const char *s)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "loadgen: bad --target %s\n", s);
        exit(2);
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    target_addr.sin_family = AF_INET;
    target_addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &target_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad host %s\n", host);
        exit(2);
    }
}

static uint64_t query_u64(const char *path, const char *key)
{
    const char *q = strchr(path, '?');
    size_t kl = strlen(key);
    while (q) {
        q++;
        if (!strncmp(q, key, kl) && q[kl] == '=') return strtoull(q + kl + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --target HOST:PORT --mode sse|bytes|hold [--path P] [-c N] [-r N]\n"
            "               [--duration S] [--steps N,N,...] [--connect-batch N]\n"
            "               [--step-timeout S] [--stagger-ms MS] [--label TEXT]\n");
    exit(2);
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static void print_json(uint64_t t_end, const char *stopped_by, const char *steps_json)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double wall = secs(t_end - t_start);
    uint64_t errors = err_connect + err_status + err_truncated + err_sequence + err_short + err_parse + err_dropped;
    printf("{\"mode\":\"%s\",\"label\":\"%s\",\"target\":\"%s\",\"path\":\"%s\","
           "\"connections\":%u,\"requests_per_connection\":%u,\"requests_completed\":%" PRIu64 ","
           "\"reconnects\":%" PRIu64 ",\"events\":%" PRIu64 ",\"body_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 ","
           "\"wall_s\":%.6f,\"events_per_s\":%.1f,\"mb_per_s\":%.2f,",
           opt_mode, opt_label, opt_target, opt_path, opt_c, opt_r, requests_completed, reconnects, events,
           body_bytes, wire_bytes, wall, wall > 0 ? (double)events / wall : 0,
           wall > 0 ? (double)body_bytes / 1e6 / wall : 0);
    /* How much each read carried: near one event per read means every hop
     * forwarded event by event; many means queues built up and batched. */
    printf("\"reads\":%" PRIu64 ",\"events_per_read\":%.2f,", reads, reads ? (double)events / (double)reads : 0);
    printf("\"latency_us\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"p999\":%.1f,\"max\":%.1f},",
           hist_count, hist_count ? (double)hist_sum / (double)hist_count / 1e3 : 0, (double)hist_pct(50) / 1e3,
           (double)hist_pct(90) / 1e3, (double)hist_pct(99) / 1e3, (double)hist_pct(99.9) / 1e3,
           (double)hist_max / 1e3);
    printf("\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,", user, sys,
           wall > 0 ? 100.0 * (user + sys) / wall : 0);
    printf("\"streams_established\":%u,\"steps\":%s,", established, steps_json);
    printf("\"errors\":{\"total\":%" PRIu64 ",\"connect\":%" PRIu64 ",\"status\":%" PRIu64 ",\"truncated\":%" PRIu64
           ",\"sequence\":%" PRIu64 ",\"short\":%" PRIu64 ",\"parse\":%" PRIu64 ",\"dropped\":%" PRIu64 "},"
           "\"stopped_by\":\"%s\"}\n",
           errors, err_connect, err_status, err_truncated, err_sequence, err_short, err_parse, err_dropped,
           stopped_by);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *steps_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--target")) opt_target = v;
        else if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "-c")) opt_c = (unsigned)atoi(v);
        else if (!strcmp(a, "-r")) opt_r = (unsigned)atoi(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--steps")) steps_arg = v;
        else if (!strcmp(a, "--connect-batch")) opt_batch = (unsigned)atoi(v);
        else if (!strcmp(a, "--step-timeout")) opt_step_timeout = atof(v);
        else if (!strcmp(a, "--label")) opt_label = v;
        else if (!strcmp(a, "--stagger-ms")) opt_stagger_ms = atof(v);
        else usage();
        i++;
    }
    mode_hold = !strcmp(opt_mode, "hold");
    mode_bytes = !strcmp(opt_mode, "bytes");
    if (!mode_hold && !mode_bytes && strcmp(opt_mode, "sse")) usage();
    if (!opt_path) opt_path = mode_bytes ? "/bytes?n=1048576" : mode_hold ? "/sse?events=0&interval_ms=30000&size=64"
                                                                         : "/sse?events=100&interval_ms=0&size=256";
    if (steps_arg) {
        for (const char *s = steps_arg; *s && nsteps < MAX_STEPS;) {
            steps[nsteps++] = (unsigned)strtoul(s, (char **)&s, 10);
            if (*s == ',') s++;
        }
        opt_c = steps[nsteps - 1];
    } else {
        steps[nsteps++] = opt_c;
    }
    if (!opt_c || !opt_r || !opt_batch) usage();
    parse_target(opt_target);
    expect_events = query_u64(opt_path, "events");
    expect_bytes = query_u64(opt_path, "n");
    const char *host = opt_target;
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sluice-bench-loadgen\r\n"
                                   "Accept: */*\r\n\r\n",
                                   opt_path, host);
    if (request_len >= sizeof request) usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc(opt_c, sizeof *conns);
    ready = calloc(opt_c, sizeof *ready);
    ready_next = calloc(opt_c, sizeof *ready_next);
    if (sfd < 0 || ep < 0 || !conns || !ready || !ready_next) die("setup");
    for (unsigned i = 0; i < opt_c; i++) conns[i].fd = -1;
    /* The signalfd is told apart from connections by a NULL pointer. */
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &se);

    /* Streams started together stay in phase and their events arrive in
     * bursts; spreading the first requests over one interval gives each
     * event its own moment, so latency shows the path, not the burst. */
    uint64_t stagger_ns = mode_hold ? 0 : (uint64_t)(opt_stagger_ms * 1e6);
    t_start = now_ns();
    uint64_t deadline = t_start + (uint64_t)(opt_duration * 1e9);
    const char *stopped_by = "done";
    unsigned step = 0, opened = 0;
    bool waiting_signal = false; /* hold: a step is complete, waiting for SIGUSR1 */
    uint64_t step_started = t_start;
    char steps_json[MAX_STEPS * 64] = "[";
    size_t sj = 1;
    target_streams = steps[0];

    static struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        /* Opening: sse/bytes open all C at once (their count is small);
         * hold ramps with a bounded number of connects in flight so neither
         * the target's accept queue nor SYN backlog overflows. */
        unsigned cap = mode_hold ? target_streams : opt_c;
        uint64_t next_open = 0;
        while (!stopping && !waiting_signal && opened < cap && (!mode_hold || inflight < opt_batch)) {
            if (stagger_ns) {
                uint64_t due = t_start + stagger_ns * opened / opt_c;
                if (now_ns() < due) {
                    next_open = due;
                    break;
                }
            }
            conn_open(&conns[opened++]);
        }
        uint64_t t = now_ns();
        if (mode_hold && !waiting_signal && !stopping && opened == cap && established + failed >= cap) {
            sj += (size_t)snprintf(steps_json + sj, sizeof steps_json - sj, "%s{\"streams\":%u,\"failed\":%u,\"t_s\":%.3f}",
                                   step ? "," : "", established, failed, secs(t - step_started));
            fprintf(stderr, "{\"step\":%u,\"streams\":%u,\"failed\":%u,\"t_s\":%.3f}\n", step, established, failed,
                    secs(t - step_started));
            fflush(stderr);
            waiting_signal = true;
        }
        if (mode_hold && !waiting_signal && !stopping && t - step_started > (uint64_t)(opt_step_timeout * 1e9)) {
            fprintf(stderr, "loadgen: step %u timed out with %u of %u streams\n", step, established, cap);
            stopped_by = "step_timeout";
            break;
        }
        if (!mode_hold && open_conns == 0 && opened == opt_c) break;
        if (t >= deadline) {
            stopped_by = "duration";
            break;
        }
        int timeout;
        if (nready) timeout = 0;
        else {
            uint64_t wait = deadline - t;
            if (next_open && next_open - t < wait) wait = next_open > t ? next_open - t : 0;
            /* epoll_wait counts ms; round up so a due open is never early. */
            timeout = (int)((wait + 999999u) / 1000000u);
            if (mode_hold && !waiting_signal && timeout > 100) timeout = 100; /* re-check the step timer */
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        bool finish = false;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGUSR1 && mode_hold && waiting_signal && step + 1 < nsteps) {
                        step++;
                        target_streams = steps[step];
                        waiting_signal = false;
                        step_started = now_ns();
                    } else if (si.ssi_signo != SIGUSR1 || (mode_hold && waiting_signal)) {
                        finish = true;
                    }
                }
                continue;
            }
            on_event(c, evs[i].events);
        }
        if (finish) {
            stopped_by = "signal";
            break;
        }
        /* Connections that used up their read budget get another turn. */
        size_t k = nready;
        struct conn **work = ready;
        ready = ready_next;
        ready_next = work;
        nready = 0;
        for (size_t i = 0; i < k; i++) {
            struct conn *c = work[i];
            c->on_ready = false;
            if (c->fd >= 0 && c->st != C_CONNECTING) on_readable(c);
        }
    }
    uint64_t t_end = now_ns();
    stopping = true;
    snprintf(steps_json + sj, sizeof steps_json - sj, "]");
    print_json(t_end, stopped_by, steps_json);
    return 0;
}
