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
 *        held stream is visibly established through any proxy. &batch=K puts
 *        K events (each its own chunk) in every write, as a backend that
 *        flushes several tokens at once does; the interval is then per write.
 *   GET  /bytes?n=N   Content-Length body of N bytes, written in large writes.
 *   GET  /small       a 13-byte body.
 *   POST /echo        the request body back (Content-Length bodies only).
 *
 * Usage: origin [--listen 127.0.0.1:PORT] [--port-file FILE]
 * Port 0 picks a free port; the bound port is written to --port-file (and
 * printed on stderr) once the server accepts connections. SIGTERM/SIGINT stop it.
 *
 * Built from origin.c, origin_conn.c and origin_http.c (see origin.h).
 */
#include "origin.h"

int ep, tfd, sfd, lfd;
struct conn **conns;
size_t conns_cap;

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

int main(int argc, char **argv)
{
    const char *listen_at, *port_file;
    if (!origin_options("origin", argc, argv, &listen_at, &port_file)) return 2;
    conns_cap = raise_fd_limit();
    conns = calloc(conns_cap, sizeof *conns);
    bulk = malloc(BULK_CHUNK);
    if (!conns || !bulk) die("malloc");
    memset(bulk, 'b', BULK_CHUNK);
    memset(pad, 'x', sizeof pad);
    signal(SIGPIPE, SIG_IGN);

    origin_loop_setup("origin", listen_at, port_file, EPOLLIN | EPOLLET, &sfd, &tfd, &ep, &lfd);

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
