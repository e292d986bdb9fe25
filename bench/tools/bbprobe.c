// bbprobe: measures when a newly allowed TCP port becomes reachable.
// Part of the Bastion benchmark suite.
//
//   bbprobe --host IP --port P [--interval-us US] [--timeout-ms MS] [--max-inflight N]
//
// Prints "ready <monotonic-ns>" as soon as it starts, then launches a new
// non-blocking connect() every --interval-us (each attempt is a fresh socket,
// so a dropped SYN never waits for a retransmission). On the first attempt
// that completes the handshake it prints
//   "ok <detect-monotonic-ns> <launch-monotonic-ns> <attempts> <refused>"
// and exits 0; on timeout it prints "timeout <attempts> <refused>" and exits 1.
// Refused attempts (RST) are counted and probing goes on: a filter may deny
// with a reset instead of a silent drop.
// Times are CLOCK_MONOTONIC, the clock Node's process.hrtime uses, so the
// harness can subtract the moment it applied the change.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct attempt { int fd; uint64_t launched; };

int main(int argc, char **argv) {
  const char *host = NULL;
  int port = 0, interval_us = 250, max_inflight = 256;
  long timeout_ms = 10000;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--host") && v) { host = v; i++; }
    else if (!strcmp(argv[i], "--port") && v) { port = atoi(v); i++; }
    else if (!strcmp(argv[i], "--interval-us") && v) { interval_us = atoi(v); i++; }
    else if (!strcmp(argv[i], "--timeout-ms") && v) { timeout_ms = atol(v); i++; }
    else if (!strcmp(argv[i], "--max-inflight") && v) { max_inflight = atoi(v); i++; }
    else { fprintf(stderr, "usage: bbprobe --host IP --port P [--interval-us US] [--timeout-ms MS] [--max-inflight N]\n"); return 2; }
  }
  if (!host || port <= 0) { fprintf(stderr, "bbprobe: --host and --port are required\n"); return 2; }
  if (max_inflight < 1) max_inflight = 1;
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) { fprintf(stderr, "bbprobe: bad host\n"); return 2; }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct attempt *ring = calloc(max_inflight, sizeof *ring);
  for (int i = 0; i < max_inflight; i++) ring[i].fd = -1;
  int head = 0;
  long attempts = 0, refused = 0;
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)timeout_ms * 1000000ull;
  uint64_t next = start;
  printf("ready %llu\n", (unsigned long long)start);
  fflush(stdout);
  struct epoll_event evs[64];
  for (;;) {
    uint64_t now = now_ns();
    if (now >= deadline) break;
    if (now >= next) {
      struct attempt *a = &ring[head];
      if (a->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, a->fd, NULL); close(a->fd); a->fd = -1; }
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) { perror("bbprobe: socket"); return 1; }
      struct linger lg = {.l_onoff = 1, .l_linger = 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
      attempts++;
      if (r < 0 && errno != EINPROGRESS) {
        close(fd); /* e.g. EPERM from a local filter: count and go on */
      } else {
        a->fd = fd;
        a->launched = now;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)head};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        head = (head + 1) % max_inflight;
      }
      next += (uint64_t)interval_us * 1000ull;
      if (next < now) next = now; /* fell behind: do not burst */
    }
    uint64_t t1 = now_ns();
    uint64_t wait_ns = next > t1 ? next - t1 : 0;
    struct timespec to = {.tv_sec = (time_t)(wait_ns / 1000000000ull), .tv_nsec = (long)(wait_ns % 1000000000ull)};
    int n = epoll_pwait2(ep, evs, 64, &to, NULL); /* sleeps with ns resolution, no spinning */
    for (int i = 0; i < n; i++) {
      struct attempt *a = &ring[evs[i].data.u32];
      if (a->fd < 0) continue;
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &l);
      uint64_t t = now_ns();
      if (err == 0) {
        printf("ok %llu %llu %ld %ld\n", (unsigned long long)t, (unsigned long long)a->launched, attempts, refused);
        fflush(stdout);
        return 0;
      }
      epoll_ctl(ep, EPOLL_CTL_DEL, a->fd, NULL);
      close(a->fd);
      a->fd = -1;
      if (err == ECONNREFUSED) refused++;
    }
  }
  printf("timeout %ld %ld\n", attempts, refused);
  fflush(stdout);
  return 1;
}
