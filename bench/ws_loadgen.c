/*
 * ws_loadgen.c: the WebSocket client of benchmark scenario w. One thread, one
 * epoll set, C connections, each opened with the RFC 6455 client handshake
 * (checked: status 101 and the Sec-WebSocket-Accept of its key) against
 * bench/ws_origin.c, directly or through a proxy. Client frames are masked.
 *
 * Modes (path /ws/<mode>, built from the options):
 *   echo   once all C connections are open, one --size-byte text message
 *          "<send ns> <seq> xxx..." every 1 / (--rate × C) s, the connections
 *          taking turns, so each sends --rate messages/s, evenly spread; the
 *          round trip (read time of its echo − send time) goes into a histogram.
 *   push   the origin sends --size-byte messages every --interval-us to each
 *          connection, stamped with its CLOCK_MONOTONIC send time; latency =
 *          read time − send stamp (both ends on this machine).
 *   flood  the origin writes --batch messages of --size bytes per write as fast
 *          as the sockets take them; counts messages and bytes (saturation).
 *   idle   opens C tunnels, prints {"ready":N} on stderr once all are open and
 *          holds them, silent, until SIGUSR1, SIGTERM or --duration.
 *
 * Latency, sequence numbers and message rates count from the moment all
 * connections are open until --duration later; the message total (for CPU per
 * message) counts every message read. At the end each connection sends a close
 * frame (1000) and reads until the server closes (at most 2 s in all), then one
 * JSON object goes to stdout: counts, rates, latency percentiles (µs), errors,
 * its own CPU time.
 *
 * Usage: ws_loadgen --target HOST:PORT --mode echo|push|flood|idle [-c N]
 *        [--duration S] [--rate R] [--interval-us U] [--size B] [--batch K]
 *        [--connect-batch N] [--label TEXT]
 * Built alone: gcc -O2 -o ws_loadgen ws_loadgen.c (bench/run.sh does it).
 */
#include "ws_common.h"
#include <sys/timerfd.h>

#define READ_BUDGET 16
#define MAX_EVENTS 512
#define OUT_CAP 4096
#define KEY "dGhlIHNhbXBsZSBub25jZQ==" /* RFC 6455 §1.3's example; its accept is checked at start */

enum cst { C_NEW, C_CONNECTING, C_HEAD, C_OPEN, C_CLOSING, C_DONE };
enum phase { P_CONNECT, P_RUN, P_DRAIN, P_CLOSE };

struct conn {
    int fd;
    enum cst st;
    bool on_ready;
    char head[1024];
    size_t head_len, req_off;
    struct ws_parser parser;
    uint64_t sent_seq, expect_seq;
    uint8_t out[OUT_CAP];
    size_t out_len;
};

static const char *opt_target = "127.0.0.1:8080", *opt_mode = "echo", *opt_label = "";
static unsigned opt_c = 1, opt_batch = 16, opt_connect_batch = 256, opt_size = 64;
static double opt_duration = 5, opt_rate = 20, opt_interval_us = 50000;
static bool mode_echo, mode_push, mode_flood, mode_idle;
static struct sockaddr_in addr;
static char request[512], path[128], expect_accept[29];
static size_t request_len;

static int ep, sfd, tfd;
static struct conn *conns;
static struct conn **ready, **ready_next;
static size_t nready;
static enum phase phase = P_CONNECT;
static unsigned opened, inflight, established, failed, closed_clean, turn;
static uint64_t t_start, t_run, t_stop, t_read, t_deadline;
static uint64_t msgs_total, msgs_run, bytes_total, bytes_run, reads_run, sent, echoed;
static uint64_t err_connect, err_handshake, err_closed, err_sequence, err_lost, err_parse, err_blocked;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static struct ws_hist hist;
static const char *stopped_by = "duration";
static uint8_t rbuf[256 * 1024];

static void conn_end(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->st == C_CONNECTING || c->st == C_HEAD) inflight--;
    c->st = C_DONE;
}

/* Writes what is queued in c->out; false on a write error (connection ended). */
static bool flush(struct conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return false;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return true;
}

/* Queues one masked frame and writes; a frame that does not fit is counted. */
static void send_frame(struct conn *c, unsigned opcode, const uint8_t *payload, size_t len)
{
    if (c->out_len + 14 + len > OUT_CAP) { err_blocked++; return; }
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    uint8_t mask[4] = {(uint8_t)rng, (uint8_t)(rng >> 8), (uint8_t)(rng >> 16), (uint8_t)(rng >> 24)};
    uint8_t *f = c->out + c->out_len;
    size_t h = ws_header(f, opcode, len, mask);
    for (size_t i = 0; i < len; i++) f[h + i] = payload[i] ^ mask[i & 3];
    c->out_len += h + len;
    if (!flush(c)) {
        if (phase == P_RUN) err_closed++;
        conn_end(c);
    }
}

static void open_next(void)
{
    while (opened < opt_c && inflight < opt_connect_batch) {
        struct conn *c = &conns[opened++];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { err_connect++, failed++, c->st = C_DONE; continue; }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->st = C_CONNECTING;
        inflight++;
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            err_connect++, failed++;
            conn_end(c);
            continue;
        }
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl");
    }
}

static void start_run(void)
{
    phase = P_RUN;
    t_run = now_ns();
    t_deadline = t_run + (uint64_t)(opt_duration * 1e9);
    if (mode_idle) {
        fprintf(stderr, "{\"ready\":%u,\"failed\":%u}\n", established, failed);
        fflush(stderr);
    }
    if (mode_echo && established) {
        uint64_t period = (uint64_t)(1e9 / (opt_rate * established));
        if (period < 1000) period = 1000;
        struct itimerspec its = {.it_interval = {(time_t)(period / 1000000000u), (long)(period % 1000000000u)}};
        its.it_value = its.it_interval;
        timerfd_settime(tfd, 0, &its, NULL);
    }
}

/* Once per whole frame from the server. */
static void on_frame(void *ctx, unsigned opcode, uint64_t len, const uint8_t *pfx, unsigned pfx_len)
{
    struct conn *c = ctx;
    (void)len;
    if (opcode == WS_CLOSE) {
        if (c->st == C_OPEN && phase == P_RUN) err_closed++;
        return;
    }
    if (opcode != WS_TEXT && opcode != WS_BINARY) return;
    msgs_total++;
    if (phase == P_RUN) msgs_run++;
    if (mode_flood) return;
    uint64_t ts, seq;
    if (!ws_stamp(pfx, pfx_len, &ts, &seq)) { err_parse++; return; }
    if (seq != c->expect_seq) err_sequence++;
    c->expect_seq = seq + 1;
    if (mode_echo) echoed++;
    if (phase == P_RUN && t_read >= ts) ws_hist_add(&hist, t_read - ts);
}

/* The response head: status 101 and the expected Sec-WebSocket-Accept. */
static bool check_head(struct conn *c)
{
    c->head[c->head_len] = 0;
    if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) return false;
    for (char *l = strstr(c->head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        char *line = l + 2, *end = strstr(line, "\r\n");
        if (header_is(line, (size_t)(end - line), "sec-websocket-accept")) {
            char *v = line + 21;
            while (*v == ' ') v++;
            return !strncmp(v, expect_accept, 28);
        }
    }
    return false;
}

static void on_bytes(struct conn *c, const uint8_t *b, size_t n)
{
    if (c->st == C_HEAD) {
        size_t room = sizeof c->head - 1 - c->head_len, take = n < room ? n : room;
        memcpy(c->head + c->head_len, b, take);
        size_t old = c->head_len;
        c->head_len += take;
        char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
        if (!end) {
            if (c->head_len == sizeof c->head - 1) { err_handshake++, failed++; conn_end(c); }
            return;
        }
        size_t used = (size_t)(end + 4 - c->head) - old;
        c->head_len = (size_t)(end + 4 - c->head);
        if (!check_head(c)) {
            fprintf(stderr, "ws_loadgen: handshake refused: %.200s\n", c->head);
            err_handshake++, failed++;
            conn_end(c);
            return;
        }
        c->st = C_OPEN;
        inflight--, established++;
        b += used, n -= used;
    }
    if (n && !ws_feed(&c->parser, b, n, on_frame, c)) {
        err_parse++;
        conn_end(c);
    }
}

static void on_readable(struct conn *c)
{
    for (int i = 0; i < READ_BUDGET; i++) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            r = 0;
        }
        if (r == 0) {
            if (c->st == C_CLOSING) closed_clean++;
            else if (c->st == C_CONNECTING || c->st == C_HEAD) err_connect++, failed++;
            else if (phase == P_RUN || phase == P_DRAIN) err_closed++;
            conn_end(c);
            return;
        }
        t_read = now_ns();
        bytes_total += (uint64_t)r;
        if (phase == P_RUN) bytes_run += (uint64_t)r, reads_run++;
        on_bytes(c, rbuf, (size_t)r);
        if (c->st == C_DONE) return;
    }
    if (!c->on_ready) c->on_ready = true, ready[nready++] = c;
}

static void on_event(struct conn *c, uint32_t ev)
{
    if (c->st == C_DONE) return;
    if (c->st == C_CONNECTING && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) { err_connect++, failed++; conn_end(c); return; }
        c->st = C_HEAD;
    }
    if (c->st == C_HEAD && c->req_off < request_len) {
        ssize_t w = write(c->fd, request + c->req_off, request_len - c->req_off);
        if (w > 0) c->req_off += (size_t)w;
        else if (w < 0 && errno != EAGAIN) { err_connect++, failed++; conn_end(c); return; }
    }
    if ((ev & EPOLLOUT) && c->out_len && !flush(c)) { conn_end(c); return; }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
}

static void on_tick(void)
{
    uint64_t k = 0;
    if (read(tfd, &k, sizeof k) != sizeof k || phase != P_RUN) return;
    if (k > opt_c) k = opt_c;
    uint8_t payload[4096];
    while (k--) {
        struct conn *c = NULL;
        for (unsigned tries = 0; tries < opt_c && !c; tries++) {
            struct conn *x = &conns[turn++ % opt_c];
            if (x->st == C_OPEN) c = x;
        }
        if (!c) return;
        int n = snprintf((char *)payload, 64, "%" PRIu64 " %" PRIu64 " ", now_ns(), c->sent_seq++);
        if ((unsigned)n < opt_size) memset(payload + n, 'x', opt_size - (unsigned)n);
        sent++;
        send_frame(c, WS_TEXT, payload, opt_size);
    }
}

/* Close frames out; the server's close and FIN are read in P_CLOSE. */
static void start_close(void)
{
    phase = P_CLOSE;
    t_deadline = now_ns() + 2000000000ull;
    static const uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
    for (unsigned i = 0; i < opened; i++) {
        struct conn *c = &conns[i];
        if (c->st == C_OPEN) {
            c->st = C_CLOSING;
            send_frame(c, WS_CLOSE, code, 2);
        } else if (c->st != C_DONE) {
            conn_end(c);
        }
    }
}

static void stop_run(void)
{
    t_stop = now_ns();
    struct itimerspec off = {0};
    timerfd_settime(tfd, 0, &off, NULL);
    if (mode_echo && echoed < sent) {
        phase = P_DRAIN; /* up to 1 s for echoes still on their way */
        t_deadline = t_stop + 1000000000ull;
    } else {
        start_close();
    }
}

static bool all_done(void)
{
    for (unsigned i = 0; i < opened; i++)
        if (conns[i].st != C_DONE) return false;
    return true;
}

static void print_json(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    double wall = (now_ns() - t_start) / 1e9, run = t_run && t_stop > t_run ? (t_stop - t_run) / 1e9 : 0;
    if (mode_echo && sent > echoed) err_lost = sent - echoed;
    uint64_t errors = err_connect + err_handshake + err_closed + err_sequence + err_lost + err_parse + err_blocked;
    printf("{\"mode\":\"%s\",\"label\":\"%s\",\"target\":\"%s\",\"path\":\"%s\",\"connections\":%u,"
           "\"established\":%u,\"open_s\":%.3f,\"wall_s\":%.6f,\"measure_s\":%.6f,",
           opt_mode, opt_label, opt_target, path, opt_c, established, t_run ? (t_run - t_start) / 1e9 : 0, wall, run);
    printf("\"messages\":%" PRIu64 ",\"messages_measured\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"echoed\":%" PRIu64
           ",\"wire_bytes\":%" PRIu64 ",\"messages_per_s\":%.1f,\"mb_per_s\":%.2f,\"reads\":%" PRIu64
           ",\"messages_per_read\":%.2f,",
           msgs_total, msgs_run, sent, echoed, bytes_total, run > 0 ? msgs_run / run : 0,
           run > 0 ? bytes_run / 1e6 / run : 0, reads_run, reads_run ? (double)msgs_run / reads_run : 0);
    ws_hist_print("latency_us", &hist);
    printf("\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,\"closed_clean\":%u,", user, sys,
           wall > 0 ? 100.0 * (user + sys) / wall : 0, closed_clean);
    printf("\"errors\":{\"total\":%" PRIu64 ",\"connect\":%" PRIu64 ",\"handshake\":%" PRIu64 ",\"closed\":%" PRIu64
           ",\"sequence\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"parse\":%" PRIu64 ",\"blocked\":%" PRIu64 "},"
           "\"stopped_by\":\"%s\"}\n",
           errors, err_connect, err_handshake, err_closed, err_sequence, err_lost, err_parse, err_blocked, stopped_by);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: ws_loadgen --target HOST:PORT --mode echo|push|flood|idle [-c N] [--duration S]\n"
                    "       [--rate R] [--interval-us U] [--size B] [--batch K] [--connect-batch N] [--label T]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--target")) opt_target = v;
        else if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "-c")) opt_c = (unsigned)atoi(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--rate")) opt_rate = atof(v);
        else if (!strcmp(a, "--interval-us")) opt_interval_us = atof(v);
        else if (!strcmp(a, "--size")) opt_size = (unsigned)atoi(v);
        else if (!strcmp(a, "--batch")) opt_batch = (unsigned)atoi(v);
        else if (!strcmp(a, "--connect-batch")) opt_connect_batch = (unsigned)atoi(v);
        else if (!strcmp(a, "--label")) opt_label = v;
        else usage();
        i++;
    }
    mode_echo = !strcmp(opt_mode, "echo"), mode_push = !strcmp(opt_mode, "push");
    mode_flood = !strcmp(opt_mode, "flood"), mode_idle = !strcmp(opt_mode, "idle");
    if (!(mode_echo || mode_push || mode_flood || mode_idle) || !opt_c || opt_rate <= 0 || !opt_connect_batch) usage();
    if (opt_size < 32) opt_size = 32;
    if (opt_size > 4096) opt_size = 4096;
    ws_accept(KEY, strlen(KEY), expect_accept);
    if (strcmp(expect_accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
        fprintf(stderr, "ws_loadgen: SHA-1/base64 self-check failed (%s)\n", expect_accept);
        return 1;
    }
    if (mode_push) snprintf(path, sizeof path, "/ws/push?interval_us=%.0f&size=%u", opt_interval_us, opt_size);
    else if (mode_flood) snprintf(path, sizeof path, "/ws/flood?size=%u&batch=%u", opt_size, opt_batch);
    else snprintf(path, sizeof path, "/ws/%s", opt_mode);
    parse_ipv4("ws_loadgen", "target", opt_target, &addr);
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n\r\n",
                                   path, opt_target);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) rl.rlim_cur = rl.rlim_max, setrlimit(RLIMIT_NOFILE, &rl);
    conns = calloc(opt_c, sizeof *conns);
    ready = calloc(opt_c, sizeof *ready), ready_next = calloc(opt_c, sizeof *ready_next);
    if (!conns || !ready || !ready_next) die("calloc");
    for (unsigned i = 0; i < opt_c; i++) conns[i].fd = -1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM), sigaddset(&mask, SIGINT), sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || tfd < 0 || ep < 0) die("setup");
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &sfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e);
    e.data.ptr = &tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);

    t_start = now_ns();
    uint64_t connect_limit = t_start + 60000000000ull; /* all connections open within 60 s */
    open_next();
    static struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        uint64_t now = now_ns();
        if (phase == P_CONNECT && (established + failed == opt_c || now >= connect_limit)) start_run();
        if (phase == P_RUN && !mode_idle && now >= t_deadline) stop_run();
        if (phase == P_RUN && mode_idle && opt_duration > 0 && now >= t_deadline) stop_run();
        if (phase == P_DRAIN && (echoed >= sent || now >= t_deadline)) start_close();
        if (phase == P_CLOSE && (all_done() || now >= t_deadline)) break;
        int timeout = nready ? 0 : 10;
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si) {}
                stopped_by = "signal";
                if (phase == P_CONNECT) start_run();
                if (phase == P_RUN) stop_run();
            } else if (p == &tfd) {
                on_tick();
            } else {
                on_event(p, evs[i].events);
            }
        }
        struct conn **list = ready;
        size_t m = nready;
        ready = ready_next, ready_next = list, nready = 0;
        for (size_t i = 0; i < m; i++) {
            list[i]->on_ready = false;
            if (list[i]->st != C_DONE) on_readable(list[i]);
        }
        if (phase == P_CONNECT) open_next();
    }
    for (unsigned i = 0; i < opened; i++)
        if (conns[i].st != C_DONE) conn_end(&conns[i]);
    print_json();
    return 0;
}
