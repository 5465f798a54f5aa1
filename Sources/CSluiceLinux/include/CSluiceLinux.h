#ifndef SLUICE_LINUX_H
#define SLUICE_LINUX_H
// Swift's Glibc module does not export these headers.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/resource.h>
#include <netinet/tcp.h>
#include <sched.h>
#endif
