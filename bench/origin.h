/*
 * origin.h: what the files of the benchmark origin share (see origin.c for
 * what it serves): limits, the connection, and each file's exports.
 * origin_conn.c: timer heap, ready list, socket reads and writes.
 * origin_http.c: request heads and the responses they start.
 * origin.c: accepting connections, the event loop, main.
 */
#ifndef ORIGIN_H
#define ORIGIN_H

#include "bench_common.h"
#include <fcntl.h>
#include <sys/timerfd.h>

/* Request heads from the proxies are a few hundred bytes; 8 KiB leaves room
 * for pipelined requests without letting one client grow without bound. */
#define IN_CAP 8192
/* Largest SSE event; the scratch buffer holds one framed event, or a batch of
 * events (?batch=K) whose framed sizes add up to at most this. */
#define MAX_EVENT (1u << 20)
#define SCRATCH_CAP (MAX_EVENT + 64)
/* Largest ?batch=K: one write carries at most this many events. */
#define MAX_BATCH 256
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
    unsigned batch; /* events per write (1 unless ?batch=K) */

    /* ST_BYTES and ST_ECHO: body bytes still to send (or to read, for echo) */
    uint64_t left;
};

/* origin.c */
extern int ep, tfd, sfd, lfd;
extern struct conn **conns; /* indexed by fd */
extern size_t conns_cap;

/* origin_conn.c */
/* Timer heap: connections with a pending SSE deadline, earliest first. */
extern struct conn **heap;
extern size_t heap_len;
extern uint64_t armed_at; /* deadline the timerfd is set to, 0 = disarmed */
/* Connections that stopped only because of WRITE_BUDGET. */
extern struct conn ready_head;
void heap_remove(struct conn *c);
void heap_push(struct conn *c);
void rearm_timer(void);
void ready_add(struct conn *c);
void ready_del(struct conn *c);
void conn_close(struct conn *c);
bool send_all(struct conn *c, const char *p, size_t n);
bool flush_pending(struct conn *c);
bool fill_input(struct conn *c);

/* origin_http.c */
extern char *bulk;          /* BULK_CHUNK bytes of 'b' for /bytes */
extern char pad[MAX_EVENT]; /* 'x' padding for SSE events */
void progress(struct conn *c);
void on_readable_streaming(struct conn *c, uint32_t ev);

#endif
