/*
 * origin_conn.c: the benchmark origin's timer heap (paced SSE deadlines behind
 * one timerfd), its ready list (connections that yielded with work left) and
 * socket I/O with short-write stashing. See origin.h.
 */
#include "origin.h"

struct conn **heap;
size_t heap_len;
static size_t heap_cap;
uint64_t armed_at;
struct conn ready_head = {.ready_prev = &ready_head, .ready_next = &ready_head};

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

void heap_remove(struct conn *c)
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

void heap_push(struct conn *c)
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
void rearm_timer(void)
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

void ready_add(struct conn *c)
{
    if (c->on_ready) return;
    c->on_ready = true;
    c->ready_prev = ready_head.ready_prev;
    c->ready_next = &ready_head;
    ready_head.ready_prev->ready_next = c;
    ready_head.ready_prev = c;
}

void ready_del(struct conn *c)
{
    if (!c->on_ready) return;
    c->on_ready = false;
    c->ready_prev->ready_next = c->ready_next;
    c->ready_next->ready_prev = c->ready_prev;
}

/* ---- connections -------------------------------------------------------- */

void conn_close(struct conn *c)
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
bool send_all(struct conn *c, const char *p, size_t n)
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
bool flush_pending(struct conn *c)
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
bool fill_input(struct conn *c)
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
