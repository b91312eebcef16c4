#ifndef ESCROW_CSYSTEM_H
#define ESCROW_CSYSTEM_H

/* The Linux and glibc calls Swift's Glibc module hides: its module map leaves out <sys/epoll.h>,
   the posix_spawn _np extensions and pidfd_open, and Swift cannot call the variadic syscall().
   Implemented in csystem.c against the real headers, so struct sizes are right on every
   architecture (struct epoll_event is packed on x86_64 only). This header includes no system
   header, so it cannot clash with Swift's own Glibc module. */

int escrow_epoll_create(void);
int escrow_epoll_ctl(int ep, int op, int fd, unsigned int events, unsigned long long data);
/* `events` holds `max` struct epoll_event (escrow_epoll_event_size() bytes each). */
int escrow_epoll_wait(int ep, void *events, int max, int timeout_ms);
unsigned long escrow_epoll_event_size(void);
unsigned int escrow_epoll_event_events(const void *events, int i);
unsigned long long escrow_epoll_event_data(const void *events, int i);

/* A descriptor that becomes readable when process `pid` exits (child or not); -1 and errno. */
int escrow_pidfd_open(int pid);

/* A non-blocking, close-on-exec eventfd (a counter a thread can poll and another can bump). */
int escrow_eventfd(void);

/* A non-blocking, close-on-exec inotify descriptor watching `path` for writes and close-after-write;
   -1 and errno. */
int escrow_inotify_file(const char *path);

/* `actions` is a posix_spawn_file_actions_t *. */
int escrow_spawn_addchdir(void *actions, const char *dir);
int escrow_spawn_addclosefrom(void *actions, int from);

#endif
