/*
 * loadgen_stats.c: the load generator's histograms (log-linear, HDR style:
 * per-event latency and first-byte latency) and the JSON object it prints at
 * the end. See loadgen.h.
 */
#include "loadgen.h"

/* ---- histogram ---------------------------------------------------------- */

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUB)

struct hist {
    uint64_t counts[NBUCKETS];
    uint64_t count, max, sum;
};

static struct hist latency, ttfb;
struct hist *latency_hist = &latency;
struct hist *ttfb_hist = &ttfb;

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (unsigned)((v >> shift) - SUB);
}

/* Midpoint of the bucket's value range. */
static uint64_t bucket_value(unsigned i)
{
    if (i < SUB) return i;
    unsigned shift = i / SUB - 1;
    uint64_t lo = (uint64_t)(i % SUB + SUB) << shift;
    return lo + ((1ull << shift) >> 1);
}

void hist_record(struct hist *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max) h->max = v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (!h->count) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bucket_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* Prints "NAME":{count, mean, percentiles, max} in µs, and a comma. */
static void print_hist(const char *name, const struct hist *h)
{
    printf("\"%s\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"p999\":%.1f,\"max\":%.1f},",
           name, h->count, h->count ? (double)h->sum / (double)h->count / 1e3 : 0, (double)hist_pct(h, 50) / 1e3,
           (double)hist_pct(h, 90) / 1e3, (double)hist_pct(h, 99) / 1e3, (double)hist_pct(h, 99.9) / 1e3,
           (double)h->max / 1e3);
}

void print_json(uint64_t t_end, const char *stopped_by, const char *steps_json)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double wall = secs(t_end - t_start);
    uint64_t errors = err_connect + err_status + err_truncated + err_sequence + err_short + err_parse + err_dropped;
    printf("{\"mode\":\"%s\",\"label\":\"%s\",\"target\":\"%s\",\"path\":\"%s\","
           "\"connections\":%u,\"requests_per_connection\":%u,\"requests_completed\":%" PRIu64 ","
           "\"reconnects\":%" PRIu64 ",\"events\":%" PRIu64 ",\"body_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 ","
           "\"wall_s\":%.6f,\"events_per_s\":%.1f,\"mb_per_s\":%.2f,",
           opt_mode, opt_label, opt_target, opt_path, opt_c, opt_r, requests_completed, reconnects, events,
           body_bytes, wire_bytes, wall, wall > 0 ? (double)events / wall : 0,
           wall > 0 ? (double)body_bytes / 1e6 / wall : 0);
    /* How much each read carried: near one event per read means every hop
     * forwarded event by event; many means queues built up and batched. */
    printf("\"reads\":%" PRIu64 ",\"events_per_read\":%.2f,", reads, reads ? (double)events / (double)reads : 0);
    print_hist("latency_us", &latency);
    print_hist("ttfb_us", &ttfb);
    printf("\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,", user, sys,
           wall > 0 ? 100.0 * (user + sys) / wall : 0);
    printf("\"streams_established\":%u,\"steps\":%s,", established, steps_json);
    printf("\"errors\":{\"total\":%" PRIu64 ",\"connect\":%" PRIu64 ",\"status\":%" PRIu64 ",\"truncated\":%" PRIu64
           ",\"sequence\":%" PRIu64 ",\"short\":%" PRIu64 ",\"parse\":%" PRIu64 ",\"dropped\":%" PRIu64 "},"
           "\"stopped_by\":\"%s\"}\n",
           errors, err_connect, err_status, err_truncated, err_sequence, err_short, err_parse, err_dropped,
           stopped_by);
    fflush(stdout);
}
