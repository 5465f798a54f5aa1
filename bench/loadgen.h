/*
 * loadgen.h: what the files of the benchmark load generator share (see
 * loadgen.c for what it measures): limits, the connection, the options and
 * counters, and each file's exports.
 * loadgen_conn.c: connection lifecycle, reads and writes.
 * loadgen_http.c: response head, chunked framing and SSE parsing.
 * loadgen_stats.c: the histograms and the JSON report.
 * loadgen.c: options, the event loop, main.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include "bench_common.h"

#define HEAD_CAP 4096
#define RBUF_CAP (1u << 20)
/* Reads per connection per wakeup; a fast stream yields after this so the
 * others are not starved (edge-triggered: it goes on the ready list). */
#define READ_BUDGET 16
#define MAX_EVENTS 512
#define MAX_STEPS 16

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
    uint64_t req_sent; /* when the request's last byte was written (first byte latency) */
    bool awaiting_first; /* request written whole, no response byte read yet */
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

/* loadgen.c: options */
extern const char *opt_target, *opt_path, *opt_mode, *opt_label;
extern unsigned opt_c, opt_r;
extern bool mode_hold, mode_bytes;
extern struct sockaddr_in target_addr;
extern char request[2048];
extern size_t request_len;
extern uint64_t expect_events; /* per /sse response; 0 = unknown or unlimited */
extern uint64_t expect_bytes;  /* per /bytes response; 0 = unknown */

/* loadgen.c: loop state and counters */
extern int ep;
extern struct conn **ready; /* connections that used up READ_BUDGET */
extern size_t nready;
extern uint64_t t_start;
extern uint64_t events, body_bytes, wire_bytes, reads, requests_completed, reconnects;
extern uint64_t err_connect, err_status, err_truncated, err_sequence, err_short, err_parse, err_dropped;
extern unsigned open_conns, inflight, established, failed;
extern bool stopping;

static inline double secs(uint64_t ns) { return (double)ns / 1e9; }

/* loadgen_conn.c */
void conn_open(struct conn *c);
void on_readable(struct conn *c);
void on_event(struct conn *c, uint32_t ev);

/* loadgen_http.c */
size_t body_feed(struct conn *c, const char *p, size_t n, uint64_t recv, bool *done, bool *bad);
int parse_head(struct conn *c, size_t len);

/* loadgen_stats.c: log-linear histograms (values in ns) */
struct hist;
extern struct hist *latency_hist; /* per event: read time - the origin's send stamp */
extern struct hist *ttfb_hist;    /* per response: first byte read - request written */
void hist_record(struct hist *h, uint64_t v);
void print_json(uint64_t t_end, const char *stopped_by, const char *steps_json);

#endif
