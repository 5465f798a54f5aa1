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
 * First-byte latency (TTFB) = time the read() that delivered a response's
 * first byte returned - time the request's last byte was written; it goes
 * into a second histogram of the same kind.
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
 *
 * Built from loadgen.c, loadgen_conn.c, loadgen_http.c and loadgen_stats.c
 * (see loadgen.h).
 */
#include "loadgen.h"

const char *opt_target = "127.0.0.1:8080", *opt_path = NULL, *opt_mode = "sse", *opt_label = "";
unsigned opt_c = 1, opt_r = 1;
static unsigned opt_batch = 256;
static double opt_duration = 60, opt_step_timeout = 60, opt_stagger_ms = 0;
static unsigned steps[MAX_STEPS], nsteps;

struct sockaddr_in target_addr;
char request[2048];
size_t request_len;
uint64_t expect_events;
uint64_t expect_bytes;
bool mode_hold, mode_bytes;

int ep;
static int sfd;
static struct conn *conns;
/* Two lists, so a connection that yields again while the list is being
 * worked through waits for the next turn instead of being overwritten. */
struct conn **ready;
static struct conn **ready_next;
size_t nready;

uint64_t t_start;
uint64_t events, body_bytes, wire_bytes, reads, requests_completed, reconnects;
uint64_t err_connect, err_status, err_truncated, err_sequence, err_short, err_parse, err_dropped;
unsigned open_conns, inflight, established, failed;
static unsigned target_streams;
bool stopping;

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
    parse_ipv4("loadgen", "--target", opt_target, &target_addr);
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
