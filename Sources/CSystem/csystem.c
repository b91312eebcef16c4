#define _GNU_SOURCE 1
#include "csystem.h"
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

int escrow_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int escrow_epoll_ctl(int ep, int op, int fd, unsigned int events, unsigned long long data) {
    struct epoll_event e;
    e.events = events;
    e.data.u64 = data;
    return epoll_ctl(ep, op, fd, &e);
}

int escrow_epoll_wait(int ep, void *events, int max, int timeout_ms) {
    return epoll_wait(ep, (struct epoll_event *)events, max, timeout_ms);
}

unsigned long escrow_epoll_event_size(void) { return sizeof(struct epoll_event); }
unsigned int escrow_epoll_event_events(const void *events, int i) { return ((const struct epoll_event *)events)[i].events; }
unsigned long long escrow_epoll_event_data(const void *events, int i) { return ((const struct epoll_event *)events)[i].data.u64; }

int escrow_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int escrow_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int escrow_inotify_file(const char *path) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, path, IN_MODIFY | IN_CLOSE_WRITE) < 0) { close(fd); return -1; }
    return fd;
}

int escrow_spawn_addchdir(void *actions, const char *dir) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, dir);
}

int escrow_spawn_addclosefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
