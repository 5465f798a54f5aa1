/*
 * malloc_count.c: an LD_PRELOAD shim that counts heap allocations, for test_allocations.py.
 *
 * Built by the test at run time (never committed as a binary):
 *     gcc -shared -fPIC -O2 -o <tmp>/malloc_count.so malloc_count.c -ldl
 *
 * What it counts: every call to malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign,
 * valloc and pvalloc, in every thread (the Swift runtime's swift_slowAlloc and C++ operator new end in
 * one of these). free is not counted. Counters are relaxed atomics: a reading is exact once the process
 * is quiescent, which is when the test reads it.
 *
 * How the count gets out without allocating: the constructor copies the path in the environment
 * variable MALLOC_COUNT_FILE into a static buffer and installs a SIGUSR2 handler (SA_RESTART). On
 * SIGUSR2 the handler writes one line
 *     "<total> <malloc> <calloc> <realloc> <posix_memalign> <aligned_alloc> <memalign> <valloc+pvalloc>\n"
 * to "<path>.tmp" with open/write/close only, then rename()s it to "<path>" (all async-signal-safe),
 * so a reader that removed "<path>", sent the signal and waits for "<path>" to exist never sees a
 * partial file. Without MALLOC_COUNT_FILE the shim only counts.
 *
 * dlsym recursion: glibc's dlsym may call calloc (for its error state) before the real calloc is
 * known; while the real functions are being looked up, allocations are served from a small static
 * arena, and free/realloc recognise arena pointers (free ignores them; realloc moves them to the heap).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { C_MALLOC, C_CALLOC, C_REALLOC, C_POSIX_MEMALIGN, C_ALIGNED_ALLOC, C_MEMALIGN, C_VALLOC, C_KINDS };

static unsigned long counts[C_KINDS];

static inline void count(int kind) {
    __atomic_fetch_add(&counts[kind], 1, __ATOMIC_RELAXED);
}

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);

/* ---- bootstrap arena (used only while dlsym runs) ---------------------------------------------- */

static _Alignas(64) char arena[16384];
static size_t arena_used;
static int resolving;

static int in_arena(const void *p) {
    return (const char *)p >= arena && (const char *)p < arena + sizeof arena;
}

static void *arena_alloc(size_t size, size_t align) {
    if (align < 16) align = 16;
    size_t start = (arena_used + align - 1) & ~(align - 1);
    if (size > sizeof arena || start > sizeof arena - size) return NULL;
    arena_used = start + size;
    return arena + start; /* static storage: already zero, as calloc requires */
}

static void resolve(void) {
    if (real_malloc) return;
    resolving = 1;
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
    /* real_malloc last: it is the "resolved" flag. */
    void *(*m)(size_t) = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    __atomic_store_n(&real_malloc, m, __ATOMIC_RELEASE);
    resolving = 0;
}

/* ---- the counted functions --------------------------------------------------------------------- */

void *malloc(size_t size) {
    count(C_MALLOC);
    if (!real_malloc) {
        if (resolving) return arena_alloc(size, 16);
        resolve();
    }
    return real_malloc(size);
}

void *calloc(size_t n, size_t size) {
    count(C_CALLOC);
    if (!real_calloc || !real_malloc) {
        if (resolving) {
            if (size && n > SIZE_MAX / size) return NULL;
            return arena_alloc(n * size, 16);
        }
        resolve();
    }
    return real_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    count(C_REALLOC);
    if (!real_malloc) {
        if (resolving) {
            /* Arena blocks are never resized in place; size unknown, so copy what fits. */
            void *q = arena_alloc(size, 16);
            if (q && p) {
                size_t avail = (size_t)(arena + sizeof arena - (char *)p);
                memmove(q, p, size < avail ? size : avail);
            }
            return q;
        }
        resolve();
    }
    if (in_arena(p)) {
        void *q = real_malloc(size);
        if (q) {
            size_t avail = (size_t)(arena + sizeof arena - (char *)p);
            memcpy(q, p, size < avail ? size : avail);
        }
        return q;
    }
    return real_realloc(p, size);
}

void free(void *p) {
    if (!p || in_arena(p)) return;
    if (!real_free) resolve();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t size) {
    count(C_POSIX_MEMALIGN);
    if (!real_malloc) {
        if (resolving) {
            void *q = arena_alloc(size, align);
            if (!q) return ENOMEM;
            *out = q;
            return 0;
        }
        resolve();
    }
    return real_posix_memalign(out, align, size);
}

void *aligned_alloc(size_t align, size_t size) {
    count(C_ALIGNED_ALLOC);
    if (!real_malloc) {
        if (resolving) return arena_alloc(size, align);
        resolve();
    }
    return real_aligned_alloc(align, size);
}

void *memalign(size_t align, size_t size) {
    count(C_MEMALIGN);
    if (!real_malloc) {
        if (resolving) return arena_alloc(size, align);
        resolve();
    }
    return real_memalign(align, size);
}

void *valloc(size_t size) {
    count(C_VALLOC);
    if (!real_malloc) {
        if (resolving) return arena_alloc(size, 4096);
        resolve();
    }
    return real_valloc(size);
}

void *pvalloc(size_t size) {
    count(C_VALLOC);
    if (!real_malloc) {
        if (resolving) return arena_alloc(size, 4096);
        resolve();
    }
    return real_pvalloc(size);
}

/* ---- reporting (async-signal-safe) ------------------------------------------------------------- */

static char out_path[4096];
static char tmp_path[4096 + 8];

static size_t put_decimal(char *dst, unsigned long v) {
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) dst[i] = digits[n - 1 - i];
    return n;
}

static void on_sigusr2(int sig) {
    (void)sig;
    int saved = errno;
    char line[256];
    size_t len = 0;
    unsigned long snapshot[C_KINDS], total = 0;
    for (int k = 0; k < C_KINDS; k++) {
        snapshot[k] = __atomic_load_n(&counts[k], __ATOMIC_RELAXED);
        total += snapshot[k];
    }
    len += put_decimal(line + len, total);
    for (int k = 0; k < C_KINDS; k++) {
        line[len++] = ' ';
        len += put_decimal(line + len, snapshot[k]);
    }
    line[len++] = '\n';
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(fd, line + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
        close(fd);
        if (off == len) rename(tmp_path, out_path);
    }
    errno = saved;
}

__attribute__((constructor)) static void malloc_count_init(void) {
    resolve();
    const char *path = getenv("MALLOC_COUNT_FILE");
    if (!path || !*path || strlen(path) >= sizeof out_path) return;
    strcpy(out_path, path);
    strcpy(tmp_path, path);
    strcat(tmp_path, ".tmp");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}
