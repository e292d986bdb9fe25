// bbconn: connection-rate benchmark for the Bastion benchmark suite.
//
// Every connection carries exactly one request and one response:
//   client: connect, send REQ bytes, read RESP bytes, close
//   server: accept, read REQ bytes, send RESP bytes, close when the peer closes
//
//   bbconn server [--bind IP] --port P [--port P2 ...] [--range LO-HI] [--threads T]
//                 [--req N] [--resp N]
//   bbconn client --host IP --port P [--duration S] [--max-conns N]
//                 [--concurrency C] [--threads T] [--req N] [--resp N] [--linger0]
//                 [--timeout-ms MS] [--sport-range LO-HI]
//
// The client runs for a fixed time (and at most --max-conns connections) and
// prints one JSON line: {"conns":..,"errors":..,"timeouts":..,"seconds":..,"conn_per_s":..}.
// Source ports: the client binds nothing by default and relies on the
// namespace's ip_local_port_range + tcp_tw_reuse (set by the harness); with
// --sport-range it binds explicit source ports round-robin (SO_REUSEADDR) so
// it can never run out of ephemeral ports. --linger0 closes with RST (no
// TIME_WAIT at all).
// The server listens on every --port and on every port of --range (used by the
// update probes), with SO_REUSEPORT so that each thread has its own sockets.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 4096
#define MAX_EVENTS 256

static int g_req = 64, g_resp = 64, g_threads = 1, g_conc = 16, g_linger0 = 0;
static double g_duration = 5.0;
static long g_max_conns = 0, g_timeout_ms = 2000;
static const char *g_host = "127.0.0.1", *g_bind = "0.0.0.0";
static int g_ports[MAX_PORTS], g_nports = 0;
static int g_sport_lo = 0, g_sport_hi = 0;
static atomic_long g_started, g_done, g_errors, g_timeouts;
static atomic_int g_sport_next;
static volatile sig_atomic_t g_stop = 0;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "bbconn: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* ---------------------------------------------------------------- server */

struct sconn {
  int fd;
  int got;    /* request bytes read */
  int sent;   /* response bytes written */
};

static int make_listener(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, g_bind, &a.sin_addr) != 1) { errno = EINVAL; die("bind address"); }
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(s, 4096) < 0) die("listen");
  return s;
}

static void sclose(int ep, struct sconn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

static void *server_thread(void *arg) {
  (void)arg;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  char *buf = calloc(1, 65536);
  char *resp = calloc(1, g_resp > 0 ? g_resp : 1);
  memset(resp, 'r', g_resp);
  /* listeners are tagged with a NULL-free marker: low bit set */
  for (int i = 0; i < g_nports; i++) {
    int l = make_listener(g_ports[i]);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)l << 1) | 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0) die("epoll_ctl listener");
  }
  struct epoll_event evs[MAX_EVENTS];
  while (!g_stop) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, 200);
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag & 1) {
        int l = (int)(tag >> 1);
        for (;;) {
          int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct sconn *c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); free(c); }
        }
        continue;
      }
      struct sconn *c = evs[i].data.ptr;
      int closed = 0;
      for (;;) {
        ssize_t r = read(c->fd, buf, 65536);
        if (r > 0) { c->got += (int)r; continue; }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) closed = 1;
        break;
      }
      if (c->got >= g_req && c->sent < g_resp && !closed) {
        ssize_t w = write(c->fd, resp + c->sent, g_resp - c->sent);
        if (w > 0) c->sent += (int)w;
        else if (errno != EAGAIN) closed = 1;
      }
      if (closed || (evs[i].events & (EPOLLERR | EPOLLHUP))) sclose(ep, c);
    }
  }
  free(buf);
  free(resp);
  return NULL;
}

/* ---------------------------------------------------------------- client */

enum { C_CONNECTING, C_SENDING, C_READING };

struct cconn {
  int fd;
  int state;
  int sent, got;
  double t0;
};

static struct sockaddr_in g_dst;

static int client_open(int ep, struct cconn *c) {
  if (g_max_conns > 0 && atomic_fetch_add(&g_started, 1) >= g_max_conns) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g_linger0) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  if (g_sport_lo > 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int span = g_sport_hi - g_sport_lo + 1;
    for (int tries = 0; tries < 64; tries++) {
      int p = g_sport_lo + (atomic_fetch_add(&g_sport_next, 1) % span);
      struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(p)};
      if (bind(fd, (struct sockaddr *)&src, sizeof src) == 0) break;
    }
  }
  c->fd = fd;
  c->state = C_CONNECTING;
  c->sent = c->got = 0;
  c->t0 = now_s();
  int r = connect(fd, (struct sockaddr *)&g_dst, sizeof g_dst);
  if (r < 0 && errno != EINPROGRESS) {
    atomic_fetch_add(&g_errors, 1);
    close(fd);
    c->fd = -1;
    return 1; /* retry later */
  }
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  return 0;
}

static void client_close(int ep, struct cconn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

struct cthread { int conc; double deadline; };

static void *client_thread(void *arg) {
  struct cthread *t = arg;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct cconn *cs = calloc(t->conc, sizeof *cs);
  char *req = calloc(1, g_req > 0 ? g_req : 1);
  memset(req, 'q', g_req);
  char buf[65536];
  int active = 0;
  for (int i = 0; i < t->conc; i++) {
    cs[i].fd = -1;
    if (client_open(ep, &cs[i]) == 0) active++;
  }
  struct epoll_event evs[MAX_EVENTS];
  double last_scan = now_s();
  while (!g_stop) {
    double now = now_s();
    if (now >= t->deadline) break;
    int n = epoll_wait(ep, evs, MAX_EVENTS, 50);
    now = now_s();
    int stop_new = now >= t->deadline;
    for (int i = 0; i < n; i++) {
      struct cconn *c = evs[i].data.ptr;
      if (c->fd < 0) continue;
      int fail = 0, finished = 0;
      if (c->state == C_CONNECTING) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) fail = 1;
        else {
          c->state = C_SENDING;
          struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
      }
      if (!fail && c->state == C_SENDING) {
        ssize_t w = write(c->fd, req + c->sent, g_req - c->sent);
        if (w > 0) c->sent += (int)w;
        else if (errno != EAGAIN) fail = 1;
        if (c->sent >= g_req) c->state = C_READING;
      }
      if (!fail && c->state == C_READING && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        for (;;) {
          ssize_t r = read(c->fd, buf, sizeof buf);
          if (r > 0) { c->got += (int)r; continue; }
          if (r == 0 && c->got < g_resp) fail = 1;
          else if (r < 0 && errno != EAGAIN && errno != EINTR) fail = 1;
          break;
        }
        if (!fail && c->got >= g_resp) finished = 1;
      }
      if (fail || finished) {
        client_close(ep, c);
        if (finished) atomic_fetch_add(&g_done, 1);
        else atomic_fetch_add(&g_errors, 1);
        active--;
        if (!stop_new && client_open(ep, c) == 0) active++;
      }
    }
    if (now - last_scan > 0.05) {
      last_scan = now;
      for (int i = 0; i < t->conc; i++) {
        struct cconn *c = &cs[i];
        if (c->fd >= 0 && (now - c->t0) * 1000.0 > g_timeout_ms) {
          client_close(ep, c);
          atomic_fetch_add(&g_timeouts, 1);
          active--;
          if (!stop_new && client_open(ep, c) == 0) active++;
        } else if (c->fd < 0 && !stop_new) {
          /* a slot whose open failed (e.g. EADDRNOTAVAIL): retry */
          int r = client_open(ep, c);
          if (r == 0) active++;
        }
      }
    }
    if (g_max_conns > 0 && atomic_load(&g_done) + atomic_load(&g_errors) + atomic_load(&g_timeouts) >= g_max_conns) break;
  }
  for (int i = 0; i < t->conc; i++) if (cs[i].fd >= 0) client_close(ep, &cs[i]);
  free(cs);
  close(ep);
  return NULL;
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
  fprintf(stderr,
          "usage: bbconn server [--bind IP] --port P [--port P ...] [--range LO-HI] [--threads T] [--req N] [--resp N]\n"
          "       bbconn client --host IP --port P [--duration S] [--max-conns N] [--concurrency C] [--threads T]\n"
          "                     [--req N] [--resp N] [--linger0] [--timeout-ms MS] [--sport-range LO-HI]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  int server = strcmp(argv[1], "server") == 0;
  if (!server && strcmp(argv[1], "client") != 0) usage();
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) usage(); i++; } while (0)
    if (!strcmp(a, "--port")) { NEEDV(); if (g_nports < MAX_PORTS) g_ports[g_nports++] = atoi(v); }
    else if (!strcmp(a, "--range")) {
      NEEDV();
      int lo = 0, hi = 0;
      if (sscanf(v, "%d-%d", &lo, &hi) != 2) usage();
      for (int p = lo; p <= hi && g_nports < MAX_PORTS; p++) g_ports[g_nports++] = p;
    }
    else if (!strcmp(a, "--sport-range")) { NEEDV(); if (sscanf(v, "%d-%d", &g_sport_lo, &g_sport_hi) != 2) usage(); }
    else if (!strcmp(a, "--bind")) { NEEDV(); g_bind = v; }
    else if (!strcmp(a, "--host")) { NEEDV(); g_host = v; }
    else if (!strcmp(a, "--threads")) { NEEDV(); g_threads = atoi(v); }
    else if (!strcmp(a, "--concurrency")) { NEEDV(); g_conc = atoi(v); }
    else if (!strcmp(a, "--duration")) { NEEDV(); g_duration = atof(v); }
    else if (!strcmp(a, "--max-conns")) { NEEDV(); g_max_conns = atol(v); }
    else if (!strcmp(a, "--timeout-ms")) { NEEDV(); g_timeout_ms = atol(v); }
    else if (!strcmp(a, "--req")) { NEEDV(); g_req = atoi(v); }
    else if (!strcmp(a, "--resp")) { NEEDV(); g_resp = atoi(v); }
    else if (!strcmp(a, "--linger0")) g_linger0 = 1;
    else usage();
  }
  if (g_threads < 1) g_threads = 1;
  if (g_nports == 0) usage();
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  pthread_t th[256];
  if (g_threads > 256) g_threads = 256;
  if (server) {
    for (int i = 0; i < g_threads; i++) pthread_create(&th[i], NULL, server_thread, NULL);
    /* readiness line for the harness */
    printf("listening %d ports\n", g_nports);
    fflush(stdout);
    for (int i = 0; i < g_threads; i++) pthread_join(th[i], NULL);
    return 0;
  }

  g_dst.sin_family = AF_INET;
  g_dst.sin_port = htons(g_ports[0]);
  if (inet_pton(AF_INET, g_host, &g_dst.sin_addr) != 1) { fprintf(stderr, "bbconn: bad host %s\n", g_host); return 2; }
  if (g_conc < g_threads) g_conc = g_threads;
  struct cthread ct[256];
  double t0 = now_s();
  for (int i = 0; i < g_threads; i++) {
    ct[i].conc = g_conc / g_threads + (i < g_conc % g_threads ? 1 : 0);
    ct[i].deadline = t0 + g_duration;
    pthread_create(&th[i], NULL, client_thread, &ct[i]);
  }
  for (int i = 0; i < g_threads; i++) pthread_join(th[i], NULL);
  double secs = now_s() - t0;
  long done = atomic_load(&g_done);
  printf("{\"conns\":%ld,\"errors\":%ld,\"timeouts\":%ld,\"seconds\":%.4f,\"conn_per_s\":%.1f}\n", done,
         atomic_load(&g_errors), atomic_load(&g_timeouts), secs, secs > 0 ? done / secs : 0.0);
  return 0;
}
