/*
 * ws_origin.c: the WebSocket origin of benchmark scenario w. One thread, one
 * epoll set, non-blocking edge-triggered sockets, the RFC 6455 server
 * handshake and framing written here (ws_common.h), nothing beyond libc.
 * Every upgrade request to /ws/... gets a 101; what follows depends on the path:
 *
 *   GET /ws/echo    every message back as it came (opcode and payload, unmasked),
 *                   as soon as it is whole.
 *   GET /ws/push?interval_us=U&size=B
 *                   a text message of B bytes every U µs to each push connection:
 *                   "<send ns> <seq> xxx...", <send ns> being CLOCK_MONOTONIC read
 *                   just before the write, <seq> counting from 0 per connection.
 *                   One timer serves all push connections in turn, ticking every
 *                   U / (push connections), so sends are spread evenly over the
 *                   interval instead of arriving in bursts.
 *   GET /ws/flood?size=B&batch=K
 *                   binary messages of B bytes, K per write, as fast as the socket
 *                   takes them (the tunnel's saturation load).
 *   GET /ws/idle    nothing after the 101: a held, idle tunnel.
 *
 * A close frame from the client gets a close frame back (what was queued goes
 * first), then the origin closes TCP, as RFC 6455 §7 has the server do. A
 * request that is not a WebSocket upgrade gets 426 and a close.
 *
 * Usage: ws_origin [--listen 127.0.0.1:PORT] [--port-file FILE]
 * Port 0 picks a free port; the bound port is written to --port-file once the
 * server accepts connections. SIGTERM/SIGINT stop it. Built alone:
 * gcc -O2 -o ws_origin ws_origin.c (bench/run.sh does it).
 */
#include "ws_common.h"
#include <sys/timerfd.h>

#define HEAD_CAP 4096
#define IN_CAP (64 * 1024)   /* echo: the largest frame it echoes */
#define OUT_MAX (1u << 20)   /* queued output per connection before it drops */
#define FLOOD_BUDGET 16      /* flood writes per connection per turn */
#define MAX_EVENTS 512

enum st { ST_HEAD, ST_OPEN, ST_CLOSING };
enum mode { M_ECHO, M_PUSH, M_FLOOD, M_IDLE };

struct conn {
    int fd;
    enum st st;
    enum mode mode;
    bool writable, on_ready;
    char *head;                /* the request head, until the 101 */
    size_t head_len;
    uint8_t *in;               /* echo: unparsed input */
    size_t in_len;
    struct ws_parser parser;   /* other modes: frames from the client */
    uint8_t *out;              /* bytes a write did not take yet */
    size_t out_cap, out_off, out_len;
    uint8_t *flood;            /* flood: one write's worth of frames */
    size_t flood_len;
    uint64_t seq;
    bool close_seen;           /* a close frame arrived (answered after the parse) */
    uint8_t close_code[2];
    unsigned close_len;
    long ring_idx;             /* push: index in the ring, -1 otherwise */
    unsigned size;
};

static int ep, tfd, sfd, lfd;
static struct conn **conns;
static size_t conns_cap;
static struct conn **ring;     /* push connections, served in turn */
static size_t nring, ring_cap, ring_next;
static uint64_t push_interval_ns = 50000000;
static struct conn **ready;    /* flood connections that used up their budget */
static size_t nready, ready_cap;
static uint64_t dropped;       /* messages dropped for a full output queue */
static uint8_t rbuf[256 * 1024];

static uint64_t query_u64(const char *q, const char *key, uint64_t dflt)
{
    size_t kl = strlen(key);
    while (q && *q) {
        if (*q == '?' || *q == '&') q++;
        if (!strncmp(q, key, kl) && q[kl] == '=') return strtoull(q + kl + 1, NULL, 10);
        q = strpbrk(q, "& ");
        if (q && *q == ' ') break;
    }
    return dflt;
}

/* ---- push ring and its timer -------------------------------------------- */

static void rearm(void)
{
    struct itimerspec its = {0};
    if (nring) {
        uint64_t period = push_interval_ns / nring;
        if (period < 1000) period = 1000;
        its.it_interval.tv_sec = (time_t)(period / 1000000000u);
        its.it_interval.tv_nsec = (long)(period % 1000000000u);
        its.it_value = its.it_interval;
    }
    timerfd_settime(tfd, 0, &its, NULL);
}

static void ring_add(struct conn *c)
{
    if (nring == ring_cap) {
        ring_cap = ring_cap ? 2 * ring_cap : 256;
        ring = realloc(ring, ring_cap * sizeof *ring);
        if (!ring) die("realloc");
    }
    c->ring_idx = (long)nring;
    ring[nring++] = c;
    rearm();
}

static void ring_remove(struct conn *c)
{
    if (c->ring_idx < 0) return;
    struct conn *last = ring[--nring];
    ring[c->ring_idx] = last;
    last->ring_idx = c->ring_idx;
    c->ring_idx = -1;
    rearm();
}

/* ---- output --------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
    ring_remove(c);
    conns[c->fd] = NULL;
    close(c->fd);
    if (c->on_ready)
        for (size_t i = 0; i < nready; i++)
            if (ready[i] == c) ready[i] = NULL;
    free(c->head), free(c->in), free(c->out), free(c->flood);
    free(c);
}

/* Writes what is queued; false when the connection was closed. */
static bool flush_out(struct conn *c)
{
    while (c->out_len && c->writable) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { c->writable = false; break; }
            conn_close(c);
            return false;
        }
        c->out_off += (size_t)w, c->out_len -= (size_t)w;
    }
    if (!c->out_len) c->out_off = 0;
    if (!c->out_len && c->st == ST_CLOSING) {
        conn_close(c);
        return false;
    }
    return true;
}

/* Sends n bytes: written at once when nothing is queued, the rest queued.
 * False when the connection was closed (write error); drops (and counts)
 * what would grow the queue past OUT_MAX. */
static bool send_bytes(struct conn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!c->out_len && c->writable) {
        while (n) {
            ssize_t w = write(c->fd, b, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) { c->writable = false; break; }
                conn_close(c);
                return false;
            }
            b += w, n -= (size_t)w;
        }
    }
    if (!n) return true;
    if (c->out_len + n > OUT_MAX) { dropped++; return true; }
    if (c->out_off + c->out_len + n > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n) cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out) die("realloc");
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_off + c->out_len, b, n);
    c->out_len += n;
    return true;
}

/* A close frame back (echoing the client's code), then close after the queue. */
static bool send_close(struct conn *c, const uint8_t *code, unsigned n)
{
    uint8_t f[4] = {0x80 | WS_CLOSE, 0};
    if (n >= 2) f[1] = 2, f[2] = code[0], f[3] = code[1];
    c->st = ST_CLOSING;
    ring_remove(c);
    if (!send_bytes(c, f, n >= 2 ? 4 : 2)) return false;
    return flush_out(c);
}

static bool push_one(struct conn *c)
{
    uint8_t f[14 + 4096];
    unsigned size = c->size;
    size_t h = ws_header(f, WS_TEXT, size, NULL);
    int k = snprintf((char *)f + h, 64, "%" PRIu64 " %" PRIu64 " ", now_ns(), c->seq++);
    if ((unsigned)k < size) memset(f + h + k, 'x', size - (unsigned)k);
    return send_bytes(c, f, h + size);
}

/* Flood: writes whole batches until the socket is full or the budget is spent. */
static void flood(struct conn *c)
{
    if (!flush_out(c)) return;
    for (int i = 0; i < FLOOD_BUDGET && c->st == ST_OPEN && !c->out_len && c->writable; i++)
        if (!send_bytes(c, c->flood, c->flood_len)) return;
    if (c->st == ST_OPEN && c->writable && !c->out_len && !c->on_ready) {
        if (nready == ready_cap) {
            ready_cap = ready_cap ? 2 * ready_cap : 64;
            ready = realloc(ready, ready_cap * sizeof *ready);
            if (!ready) die("realloc");
        }
        ready[nready++] = c;
        c->on_ready = true;
    }
}

/* ---- input ---------------------------------------------------------------- */

/* Frames from a client in push, flood or idle mode: a close is answered;
 * anything else is read and dropped. */
static void on_frame(void *ctx, unsigned opcode, uint64_t len, const uint8_t *pfx, unsigned pfx_len)
{
    struct conn *c = ctx;
    (void)len;
    if (opcode != WS_CLOSE || c->close_seen) return;
    c->close_seen = true;
    c->close_len = pfx_len >= 2 ? 2 : 0;
    memcpy(c->close_code, pfx, c->close_len);
}

/* Echo: every whole frame in c->in goes back unmasked. False: closed. */
static bool echo_frames(struct conn *c)
{
    size_t i = 0;
    while (c->st == ST_OPEN && c->in_len - i >= 2) {
        const uint8_t *f = c->in + i;
        unsigned l7 = f[1] & 0x7F, hl = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (f[1] & 0x80 ? 4 : 0);
        if (c->in_len - i < hl) break;
        uint64_t len = l7;
        if (l7 == 126) len = (uint64_t)f[2] << 8 | f[3];
        else if (l7 == 127) for (int k = 0; k < 8; k++) len = len << 8 | f[2 + k];
        if ((f[0] & 0xF0) != 0x80 || len > IN_CAP - 14) {  /* fragments, RSV bits, too big */
            conn_close(c);
            return false;
        }
        if (c->in_len - i < hl + len) break;
        uint8_t *pl = (uint8_t *)f + hl;
        if (f[1] & 0x80)
            for (uint64_t k = 0; k < len; k++) pl[k] ^= f[hl - 4 + (k & 3)];
        unsigned op = f[0] & 0x0F;
        i += hl + len;
        if (op == WS_CLOSE) return send_close(c, pl, (unsigned)len);
        if (op == WS_PONG) continue;
        /* The reply's header is the request's minus its mask key: it fits in
         * front of the payload, so header and payload go in one write. */
        uint8_t h[14];
        size_t n = ws_header(h, op == WS_PING ? WS_PONG : op, len, NULL);
        memcpy(pl - n, h, n);
        if (!send_bytes(c, pl - n, n + len)) return false;
    }
    memmove(c->in, c->in + i, c->in_len - i);
    c->in_len -= i;
    return true;
}

static bool on_ws_bytes(struct conn *c, const uint8_t *b, size_t n)
{
    if (c->mode != M_ECHO) {
        if (!ws_feed(&c->parser, b, n, on_frame, c)) { conn_close(c); return false; }
        if (c->close_seen && c->st == ST_OPEN) return send_close(c, c->close_code, c->close_len);
        return true;
    }
    while (n) {
        size_t take = IN_CAP - c->in_len < n ? IN_CAP - c->in_len : n;
        memcpy(c->in + c->in_len, b, take);
        c->in_len += take, b += take, n -= take;
        if (!echo_frames(c)) return false;
    }
    return true;
}

static void respond_426(struct conn *c)
{
    static const char r[] = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    c->st = ST_CLOSING;
    if (send_bytes(c, r, sizeof r - 1)) flush_out(c);
}

/* The head is whole: answer the upgrade. False when the connection closed. */
static bool upgrade(struct conn *c, size_t head_end)
{
    char *h = c->head, *key = NULL, accept[29];
    size_t klen = 0;
    bool ws = false;
    h[head_end] = 0;
    if (strncmp(h, "GET /ws/", 8) != 0) { respond_426(c); return false; }
    for (char *line = strstr(h, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2, *end = strstr(l, "\r\n");
        size_t len = (size_t)(end - l);
        if (header_is(l, len, "upgrade") && value_has(l + 8, len - 8, "websocket")) ws = true;
        if (header_is(l, len, "sec-websocket-key")) {
            key = l + 18;
            while (*key == ' ') key++;
            klen = (size_t)(end - key);
            while (klen && key[klen - 1] == ' ') klen--;
        }
    }
    if (!ws || !key) { respond_426(c); return false; }
    ws_accept(key, klen, accept);
    const char *path = h + 8, *q = strpbrk(path, "? ");
    c->size = (unsigned)query_u64(q, "size", 64);
    if (c->size < 32) c->size = 32;
    if (c->size > 4096) c->size = 4096;
    if (!strncmp(path, "echo", 4)) c->mode = M_ECHO;
    else if (!strncmp(path, "push", 4)) c->mode = M_PUSH;
    else if (!strncmp(path, "flood", 5)) c->mode = M_FLOOD;
    else c->mode = M_IDLE;
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    c->st = ST_OPEN;
    if (c->mode == M_ECHO) {
        c->in = malloc(IN_CAP);
        if (!c->in) die("malloc");
    } else if (c->mode == M_FLOOD) {
        unsigned batch = (unsigned)query_u64(q, "batch", 1);
        if (batch < 1) batch = 1;
        if (batch > 64) batch = 64;
        c->flood = malloc(batch * (14 + c->size));
        if (!c->flood) die("malloc");
        for (unsigned i = 0; i < batch; i++) {
            size_t hl = ws_header(c->flood + c->flood_len, WS_BINARY, c->size, NULL);
            memset(c->flood + c->flood_len + hl, 'x', c->size);
            c->flood_len += hl + c->size;
        }
    }
    if (!send_bytes(c, resp, (size_t)n)) return false;
    if (c->mode == M_PUSH) {
        push_interval_ns = query_u64(q, "interval_us", 50000) * 1000;
        ring_add(c);
    }
    return true;
}

/* Reads until EAGAIN; false when the connection was closed. */
static bool on_readable(struct conn *c)
{
    int fd = c->fd; /* c may be freed below: conns[fd] tells */
    for (;;) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return true;
            conn_close(c);
            return false;
        }
        if (r == 0) { conn_close(c); return false; }
        const uint8_t *b = rbuf;
        size_t n = (size_t)r;
        if (c->st == ST_HEAD) {
            size_t take = HEAD_CAP - 1 - c->head_len < n ? HEAD_CAP - 1 - c->head_len : n;
            memcpy(c->head + c->head_len, b, take);
            size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
            c->head_len += take;
            char *end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!end) {
                if (c->head_len == HEAD_CAP - 1) { respond_426(c); return conns[fd] == c; }
                continue;
            }
            size_t head_end = (size_t)(end - c->head) + 4;
            size_t used = head_end - (c->head_len - take); /* bytes of this read in the head */
            if (!upgrade(c, head_end)) return conns[fd] == c;
            free(c->head), c->head = NULL;
            b += used, n -= used;
            if (c->mode == M_FLOOD) flood(c);
            if (conns[fd] != c) return false;
        }
        if (c->st == ST_CLOSING) continue; /* read and drop until the peer's FIN */
        if (n && !on_ws_bytes(c, b, n)) return false;
    }
}

static void accept_all(void)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EMFILE || errno == ENFILE) return;
            die("accept4");
        }
        if ((size_t)fd >= conns_cap) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c || !(c->head = malloc(HEAD_CAP))) die("calloc");
        c->fd = fd, c->writable = true, c->ring_idx = -1, c->st = ST_HEAD;
        conns[fd] = c;
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
        on_readable(c);
    }
}

static void on_tick(void)
{
    uint64_t k = 0;
    if (read(tfd, &k, sizeof k) != sizeof k || !nring) return;
    if (k > nring) k = nring; /* late: one round at most, no bursts per connection */
    while (k--) {
        if (!nring) return;
        if (ring_next >= nring) ring_next = 0;
        struct conn *c = ring[ring_next++];
        if (push_one(c)) flush_out(c);
    }
}

int main(int argc, char **argv)
{
    const char *listen_at, *port_file;
    if (!origin_options("ws_origin", argc, argv, &listen_at, &port_file)) return 2;
    conns_cap = raise_fd_limit();
    conns = calloc(conns_cap, sizeof *conns);
    if (!conns) die("calloc");
    signal(SIGPIPE, SIG_IGN);
    origin_loop_setup("ws_origin", listen_at, port_file, EPOLLIN, &sfd, &tfd, &ep, &lfd);

    static struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, nready ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            uint32_t ev = evs[i].events;
            if (fd == lfd) accept_all();
            else if (fd == tfd) on_tick();
            else if (fd == sfd) {
                if (dropped) fprintf(stderr, "ws_origin: %" PRIu64 " messages dropped (full queues)\n", dropped);
                fprintf(stderr, "ws_origin: stopping\n");
                return 0;
            } else {
                struct conn *c = conns[fd];
                if (!c) continue;
                if (ev & EPOLLOUT) c->writable = true;
                if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !on_readable(c)) continue;
                if (ev & (EPOLLHUP | EPOLLERR)) { conn_close(c); continue; }
                if (!flush_out(c)) continue;
                if (c->mode == M_FLOOD && c->st == ST_OPEN && (ev & EPOLLOUT)) flood(c);
            }
        }
        /* Flood connections that used their budget get another; ones queued
         * during this pass wait for the next turn. */
        size_t m = nready;
        for (size_t i = 0; i < m; i++) {
            struct conn *c = ready[i];
            if (!c) continue;
            c->on_ready = false;
            ready[i] = NULL;
            flood(c);
        }
        size_t j = 0;
        for (size_t i = 0; i < nready; i++)
            if (ready[i]) ready[j++] = ready[i];
        nready = j;
    }
}
