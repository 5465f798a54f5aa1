#ifndef SLUICE_LINUX_H
#define SLUICE_LINUX_H
// Swift's Glibc module does not export these headers.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/resource.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/types.h>

// GNU extensions Swift's Glibc module hides (it is built without _GNU_SOURCE); declarations only.
extern int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);
#include <pthread.h>
extern int pthread_setname_np(pthread_t thread, const char *name);
extern ssize_t getrandom(void *buffer, size_t length, unsigned int flags);
// splice(2) and pipe2(2), for response bodies moved socket to pipe to socket without a copy through user space.
extern ssize_t splice(int fd_in, long long *off_in, int fd_out, long long *off_out, size_t len, unsigned int flags);
extern int pipe2(int pipefd[2], int flags);
#define SLUICE_SPLICE_F_MOVE 1
#define SLUICE_SPLICE_F_NONBLOCK 2
#endif
