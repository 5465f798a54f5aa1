/*
 * origin.c: the benchmark origin. One thread, one epoll set, non-blocking
 * edge-triggered sockets, HTTP/1.1 keep-alive. It exists so the benchmark
 * measures the proxy, not the backend: every response is generated without
 * allocation on the hot path and each SSE event costs one write().
 *
 *   GET  /sse?events=N&interval_ms=T&size=B   (or interval_us=U for finer pacing)
 *        chunked text/event-stream; N events (0 = until the client leaves),
 *        one every T ms (0 = as fast as the socket takes them), each B bytes:
 *        "data: <send ns> <seq> xxx...\n\n". <send ns> is CLOCK_MONOTONIC read
 *        just before the write, so a client on this machine can compute the
 *        event's latency; <seq> counts from 0 so it can spot loss or reordering.
 *        With N = 0 the head is followed at once by a ": open" comment, so a
 *        held stream is visibly established through any proxy.
 *   GET  /bytes?n=N   Content-Length body of N bytes, written in large writes.
 *   GET  /small       a 13-byte body.
 *   POST /echo        the request body back (Content-Length bodies only).
 *
 * Usage: origin [--listen 127.0.0.1:PORT] [--port-file FILE]
 * Port 0 picks a free port; the bound port is written to --port-file (and
 * printed on stderr) once the server accepts connections. SIGTERM/SIGINT stop it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Request heads from the proxies are a few hundred bytes; 8 KiB leaves room
 * for pipelined requests without letting one client grow without bound. */
#define IN_CAP 8192
/* Largest SSE event; the scratch buffer holds one framed event. */
#define MAX_EVENT (1u << 20)
#define SCRATCH_CAP (MAX_EVENT + 64)
/* /bytes writes come from one shared buffer of this size: large writes keep
 * the origin's syscall count, and so its share of core 0, low. */
#define BULK_CHUNK (1u << 20)
/* Writes one connection may issue per loop turn before yielding to others;
 * without it one interval-0 stream could starve the rest of the loop. */
#define WRITE_BUDGET 32
#define MAX_EVENTS 512

enum state {
    ST_HEAD,  /* waiting for (the rest of) a request head */
    ST_SSE,   /* streaming events */
    ST_BYTES, /* writing a Content-Length body from the bulk buffer */
    ST_ECHO,  /* relaying the request body back */
    ST_FLUSH, /* only pending bytes left; the response ends when they are out */
};

struct conn {
    int fd;
    enum state st;
    bool writable;   /* false after EAGAIN or a short write, until EPOLLOUT */
    bool keep_alive; /* the current request allows another one after it */
    bool read_eof;
    int heap_idx;    /* position in the timer heap, -1 when absent */
    struct conn *ready_prev, *ready_next; /* yielded with work left */
    bool on_ready;

    char in[IN_CAP];
    size_t in_len;

    /* Bytes of a response that a short write left behind. */
    char *pend;
    size_t pend_cap, pend_off, pend_len;

    /* ST_SSE */
    uint64_t ev_total; /* 0: unlimited */
    uint64_t ev_sent;
    uint64_t interval_ns;
    uint64_t deadline;
    size_t ev_size;

    /* ST_BYTES and ST_ECHO: body bytes still to send (or to read, for echo) */
    uint64_t left;
};

static int ep, tfd, sfd, lfd;
static struct conn **conns; /* indexed by fd */
static size_t conns_cap;
static char scratch[SCRATCH_CAP];
static char *bulk;
static char pad[MAX_EVENT];

/* Timer heap: connections with a pending SSE deadline, earliest first. */
static struct conn **heap;
static size_t heap_len, heap_cap;
static uint64_t armed_at; /* deadline the timerfd is set to, 0 = disarmed */

/* Connections that stopped only because of WRITE_BUDGET. */
static struct conn ready_head = {.ready_prev = &ready_head, .ready_next = &ready_head};

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

/* ---- timer heap ------------------------------------------------------- */

static void heap_swap(size_t a, size_t b)
{
    struct conn *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_idx = (int)a;
    heap[b]->heap_idx = (int)b;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->deadline <= heap[i]->deadline) break;
        heap_swap(p, i);
        i = p;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && heap[l]->deadline < heap[m]->deadline) m = l;
        if (r < heap_len && heap[r]->deadline < heap[m]->deadline) m = r;
        if (m == i) break;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_remove(struct conn *c)
{
    if (c->heap_idx < 0) return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    heap_len--;
    if (i == heap_len) return;
    heap[i] = heap[heap_len];
    heap[i]->heap_idx = (int)i;
    heap_up(i);
    heap_down((size_t)heap[i]->heap_idx);
}

static void heap_push(struct conn *c)
{
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof *heap);
        if (!heap) die("realloc");
    }
    heap[heap_len] = c;
    c->heap_idx = (int)heap_len;
    heap_up(heap_len++);
}

/* The timerfd follows the heap's earliest deadline; an absolute CLOCK_MONOTONIC
 * timer gives nanosecond wake-ups where epoll_wait's timeout only has ms. */
static void rearm_timer(void)
{
    uint64_t want = heap_len ? heap[0]->deadline : 0;
    if (want == armed_at) return;
    struct itimerspec its = {0};
    if (want) {
        its.it_value.tv_sec = (time_t)(want / 1000000000u);
        its.it_value.tv_nsec = (long)(want % 1000000000u);
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
    armed_at = want;
}

/* ---- ready list --------------------------------------------------------- */

static void ready_add(struct conn *c)
{
    if (c->on_ready) return;
    c->on_ready = true;
    c->ready_prev = ready_head.ready_prev;
    c->ready_next = &ready_head;
    ready_head.ready_prev->ready_next = c;
    ready_head.ready_prev = c;
}

static void ready_del(struct conn *c)
{
    if (!c->on_ready) return;
    c->on_ready = false;
    c->ready_prev->ready_next = c->ready_next;
    c->ready_next->ready_prev = c->ready_prev;
}

/* ---- connections -------------------------------------------------------- */

static void conn_close(struct conn *c)
{
    heap_remove(c);
    ready_del(c);
    conns[c->fd] = NULL;
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Keeps what a short write did not take; the response state already moved on,
 * so these bytes must go out before anything else. */
static void stash(struct conn *c, const char *p, size_t n)
{
    if (n > c->pend_cap) {
        free(c->pend);
        c->pend_cap = n < 4096 ? 4096 : n;
        c->pend = malloc(c->pend_cap);
        if (!c->pend) die("malloc");
    }
    memcpy(c->pend, p, n);
    c->pend_off = 0;
    c->pend_len = n;
}

/* Writes a whole response piece or stashes the rest. Returns false when the
 * connection failed and was closed. */
static bool send_all(struct conn *c, const char *p, size_t n)
{
    ssize_t w;
    do w = write(c->fd, p, n);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno != EAGAIN) {
            conn_close(c);
            return false;
        }
        w = 0;
    }
    if ((size_t)w < n) {
        c->writable = false;
        stash(c, p + w, n - (size_t)w);
    }
    return true;
}

/* Returns false if closed; leaves c->pend_len > 0 when the socket is full. */
static bool flush_pending(struct conn *c)
{
    while (c->pend_len) {
        ssize_t w = write(c->fd, c->pend + c->pend_off, c->pend_len);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                c->writable = false;
                return true;
            }
            conn_close(c);
            return false;
        }
        c->pend_off += (size_t)w;
        c->pend_len -= (size_t)w;
    }
    return true;
}

/* Reads into the input buffer until EAGAIN or full. Returns false on EOF or
 * error (the caller closes). */
static bool fill_input(struct conn *c)
{
    while (c->in_len < IN_CAP && !c->read_eof) {
        ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
        if (r > 0) {
            c->in_len += (size_t)r;
            continue;
        }
        if (r == 0) {
            c->read_eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return false;
    }
    return true;
}

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

/* Writes one SSE event (and the last-chunk marker after the final one) as a
 * single write, stamping it as late as possible. */
static bool send_event(struct conn *c)
{
    bool last = c->ev_total && c->ev_sent + 1 == c->ev_total;
    size_t body_len = c->ev_size;
    /* Room for the chunk-size line in front of the event. */
    char *body = scratch + 24;
    int head = snprintf(body, 64, "data: %" PRIu64 " %" PRIu64 " ", now_ns(), c->ev_sent);
    size_t min_len = (size_t)head + 2;
    if (body_len < min_len) body_len = min_len;
    memcpy(body + head, pad, body_len - min_len);
    memcpy(body + body_len - 2, "\n\n", 2);
    char sz[24];
    int szl = snprintf(sz, sizeof sz, "%zx\r\n", body_len);
    char *start = body - szl;
    memcpy(start, sz, (size_t)szl);
    size_t n = (size_t)szl + body_len;
    memcpy(start + n, "\r\n", 2);
    n += 2;
    if (last) {
        memcpy(start + n, "0\r\n\r\n", 5);
        n += 5;
    }
    c->ev_sent++;
    return send_all(c, start, n);
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
        hl = snprintf(hbuf, sizeof hbuf,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %" PRIu64 "\r\n%s\r\n",
                      c->left, c->keep_alive ? "" : "Connection: close\r\n");
        c->st = ST_BYTES;
    } else if (METHOD_IS("GET") && PATH_IS("/small")) {
        memcpy(hbuf, small_response, sizeof small_response - 1);
        hl = sizeof small_response - 1;
        c->st = ST_FLUSH;
    } else if (METHOD_IS("POST") && PATH_IS("/echo") && !chunked) {
        c->left = content_length > 0 ? (uint64_t)content_length : 0;
        hl = snprintf(hbuf, sizeof hbuf,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %" PRIu64 "\r\n%s\r\n",
                      c->left, c->keep_alive ? "" : "Connection: close\r\n");
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
static void progress(struct conn *c)
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
static void on_readable_streaming(struct conn *c, uint32_t ev)
{
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        conn_close(c);
        return;
    }
    if (!fill_input(c) || c->read_eof) conn_close(c);
}

static void accept_all(void)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN) return;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds: leave the rest queued; report it once. */
                static bool warned;
                if (!warned) fprintf(stderr, "origin: accept: %s\n", strerror(errno));
                warned = true;
                return;
            }
            die("accept4");
        }
        if ((size_t)fd >= conns_cap) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->writable = true;
        c->heap_idx = -1;
        c->st = ST_HEAD;
        conns[fd] = c;
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
        /* The request is often already here (deferred accept is not used). */
        progress(c);
    }
}

static void parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "origin: bad address %s\n", s);
        exit(2);
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "origin: bad host %s\n", host);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:0", *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen_at = argv[++i];
        else if (!strcmp(argv[i], "--port-file") && i + 1 < argc) port_file = argv[++i];
        else {
            fprintf(stderr, "usage: origin [--listen HOST:PORT] [--port-file FILE]\n");
            return 2;
        }
    }

    /* Held-stream scenarios need one fd per stream. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    conns_cap = rl.rlim_cur > 1u << 22 ? 1u << 22 : rl.rlim_cur;
    conns = calloc(conns_cap, sizeof *conns);
    bulk = malloc(BULK_CHUNK);
    if (!conns || !bulk) die("malloc");
    memset(bulk, 'b', BULK_CHUNK);
    memset(pad, 'x', sizeof pad);
    signal(SIGPIPE, SIG_IGN);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || tfd < 0 || ep < 0) die("setup");

    struct sockaddr_in sa;
    parse_addr(listen_at, &sa);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    /* The kernel caps this at somaxconn; the load generator also limits how
     * many connects it has in flight, so a held-stream ramp never overflows it. */
    if (listen(lfd, 65535) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);

    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &e);
    e.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);
    e.events = EPOLLIN;
    e.data.fd = sfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e);

    int port = ntohs(sa.sin_port);
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f) die("port file");
        fprintf(f, "%d\n", port);
        fclose(f);
        rename(tmp, port_file); /* readers never see a half-written file */
    }
    fprintf(stderr, "origin: listening on 127.0.0.1:%d\n", port);

    static struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int timeout = ready_head.ready_next != &ready_head ? 0 : -1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            uint32_t ev = evs[i].events;
            if (fd == lfd) {
                accept_all();
            } else if (fd == sfd) {
                fprintf(stderr, "origin: stopping\n");
                return 0;
            } else if (fd == tfd) {
                uint64_t expirations;
                (void)!read(tfd, &expirations, sizeof expirations);
                armed_at = 0;
                uint64_t t = now_ns();
                while (heap_len && heap[0]->deadline <= t) {
                    struct conn *c = heap[0];
                    heap_remove(c);
                    progress(c);
                }
            } else {
                /* Every event below may close c; re-fetch it from the table. */
                struct conn *c = conns[fd];
                if (!c) continue;
                if (ev & EPOLLOUT) c->writable = true;
                if (c->st == ST_HEAD || c->st == ST_ECHO) {
                    if (ev & (EPOLLHUP | EPOLLERR)) {
                        conn_close(c);
                        continue;
                    }
                    progress(c);
                } else {
                    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                        on_readable_streaming(c, ev);
                        if (!conns[fd]) continue;
                    }
                    if (ev & EPOLLOUT) progress(c);
                }
            }
        }
        /* Yielded connections get one more budget each; ones added during this
         * pass wait for the next turn, so the loop always returns to epoll. */
        struct conn *stop = ready_head.ready_prev;
        while (ready_head.ready_next != &ready_head) {
            struct conn *c = ready_head.ready_next;
            bool last = c == stop;
            progress(c);
            if (last) break;
        }
        rearm_timer();
    }
}
