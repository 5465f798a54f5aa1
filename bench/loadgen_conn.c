/*
 * loadgen_conn.c: the load generator's connections: open, send the request,
 * read with a per-wakeup budget, and end each response (next request,
 * reconnect, or done), counting every failure. See loadgen.h.
 */
#include "loadgen.h"

static char rbuf[RBUF_CAP];

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
    c->req_sent = now_ns();
    c->awaiting_first = true;
    return true;
}

void conn_open(struct conn *c)
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
    c->awaiting_first = false;
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
    if (c->awaiting_first) {
        c->awaiting_first = false;
        hist_record(ttfb_hist, recv > c->req_sent ? recv - c->req_sent : 0);
    }
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

void on_readable(struct conn *c)
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

void on_event(struct conn *c, uint32_t ev)
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
