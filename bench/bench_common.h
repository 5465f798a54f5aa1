/*
 * bench_common.h: what the benchmark origin (origin*.c) and load generator
 * (loadgen*.c) share: the clock, fatal errors, header matching and HOST:PORT
 * parsing. Header-only (static inline), so each program is still built by one
 * gcc line in run.sh.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, accept4; must precede every system header */
#endif
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
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Whether the header line `line` (len bytes) is field `name` (lower case). */
static inline bool header_is(const char *line, size_t len, const char *name)
{
    size_t nl = strlen(name);
    return len > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0;
}

/* Whether a field value contains `token`, ignoring case. */
static inline bool value_has(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= len; i++)
        if (strncasecmp(v + i, token, tl) == 0) return true;
    return false;
}

/* Parses "HOST:PORT" (IPv4) into *sa; on failure prints "<prog>: bad <what> S"
 * or "<prog>: bad host HOST" and exits with status 2. */
static inline void parse_ipv4(const char *prog, const char *what, const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "%s: bad %s %s\n", prog, what, s);
        exit(2);
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "%s: bad host %s\n", prog, host);
        exit(2);
    }
}

/* The loop an origin (origin.c, ws_origin.c) runs on: SIGTERM and SIGINT blocked and read from a signalfd
 * (level-triggered), a timerfd registered with `timer_events`, an epoll set, and a listening socket bound to
 * `listen_at` (port 0: the kernel picks one), edge-triggered. The port goes to `port_file` when one is given
 * (written aside and renamed, so readers never see a half-written file) and to stderr as
 * "PROG: listening on 127.0.0.1:PORT", the line the harness waits for. */
static inline void origin_loop_setup(const char *prog, const char *listen_at, const char *port_file,
                                     uint32_t timer_events, int *sfd, int *tfd, int *ep, int *lfd)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    *sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    *tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    *ep = epoll_create1(EPOLL_CLOEXEC);
    if (*sfd < 0 || *tfd < 0 || *ep < 0) die("setup");

    struct sockaddr_in sa;
    parse_ipv4(prog, "address", listen_at, &sa);
    *lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(*lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (*lfd < 0 || bind(*lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    /* The kernel caps this at somaxconn; the load generators also limit how
     * many connects they have in flight, so a ramp never overflows it. */
    if (listen(*lfd, 65535) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(*lfd, (struct sockaddr *)&sa, &sl);

    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = *lfd};
    epoll_ctl(*ep, EPOLL_CTL_ADD, *lfd, &e);
    e.events = timer_events;
    e.data.fd = *tfd;
    epoll_ctl(*ep, EPOLL_CTL_ADD, *tfd, &e);
    e.events = EPOLLIN;
    e.data.fd = *sfd;
    epoll_ctl(*ep, EPOLL_CTL_ADD, *sfd, &e);

    int port = ntohs(sa.sin_port);
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f) die("port file");
        fprintf(f, "%d\n", port);
        fclose(f);
        rename(tmp, port_file);
    }
    fprintf(stderr, "%s: listening on 127.0.0.1:%d\n", prog, port);
}

/* An origin's options: `--listen HOST:PORT` (default 127.0.0.1:0) and `--port-file FILE`. Returns false, after
 * printing the usage, on anything else. */
static inline bool origin_options(const char *prog, int argc, char **argv, const char **listen_at, const char **port_file)
{
    *listen_at = "127.0.0.1:0";
    *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) *listen_at = argv[++i];
        else if (!strcmp(argv[i], "--port-file") && i + 1 < argc) *port_file = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT] [--port-file FILE]\n", prog);
            return false;
        }
    }
    return true;
}

/* Raises the open-file limit to its hard limit (held-stream and idle-tunnel scenarios need one fd per
 * connection) and returns it, capped at 2^22: the size of an fd-indexed connection table. */
static inline size_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur > 1u << 22 ? 1u << 22 : rl.rlim_cur;
}

#endif
