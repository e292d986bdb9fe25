// bbnsconf: configures many network namespaces quickly (one process instead of
// one `ip -n NS ...` per namespace). Part of the Bastion benchmark suite.
//
// Reads lines from stdin:   NSNAME IFNAME A.B.C.D/PREFIX [sysctl.path=value ...]
// For each line it enters /run/netns/NSNAME, sets the IPv4 address on IFNAME,
// brings IFNAME and lo up, and writes the optional sysctls (path relative to
// /proc/sys, with dots or slashes, e.g. net.ipv4.tcp_tw_reuse=1; commas in a
// value become spaces: net.ipv4.ip_local_port_range=1024,65535).
// Exits non-zero at the first failure, naming the line.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int set_up(int s, const char *ifname) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -1;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static int set_addr(int s, const char *ifname, const char *cidr) {
  char ip[64];
  snprintf(ip, sizeof ip, "%s", cidr);
  char *slash = strchr(ip, '/');
  int prefix = 32;
  if (slash) { *slash = 0; prefix = atoi(slash + 1); }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
  sin->sin_family = AF_INET;
  if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1) { errno = EINVAL; return -1; }
  if (ioctl(s, SIOCSIFADDR, &ifr) < 0) return -1;
  memset(&ifr.ifr_netmask, 0, sizeof ifr.ifr_netmask);
  sin = (struct sockaddr_in *)&ifr.ifr_netmask;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = prefix == 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
  return ioctl(s, SIOCSIFNETMASK, &ifr);
}

static int write_sysctl(const char *kv) {
  char path[512], key[256];
  const char *eq = strchr(kv, '=');
  if (!eq || (size_t)(eq - kv) >= sizeof key) { errno = EINVAL; return -1; }
  memcpy(key, kv, eq - kv);
  key[eq - kv] = 0;
  for (char *p = key; *p; p++) if (*p == '.') *p = '/';
  snprintf(path, sizeof path, "/proc/sys/%s", key);
  int fd = open(path, O_WRONLY);
  if (fd < 0) return -1;
  char val[256];
  snprintf(val, sizeof val, "%s", eq + 1);
  for (char *p = val; *p; p++) if (*p == ',') *p = ' '; /* "1024,65535" -> "1024 65535" */
  ssize_t n = write(fd, val, strlen(val));
  close(fd);
  return n < 0 ? -1 : 0;
}

int main(void) {
  char line[4096];
  int lineno = 0, done = 0;
  while (fgets(line, sizeof line, stdin)) {
    lineno++;
    char *save = NULL;
    char *ns = strtok_r(line, " \t\r\n", &save);
    if (!ns || ns[0] == '#') continue;
    char *ifname = strtok_r(NULL, " \t\r\n", &save);
    char *cidr = strtok_r(NULL, " \t\r\n", &save);
    if (!ifname || !cidr) { fprintf(stderr, "bbnsconf: line %d: need NS IF ADDR/PREFIX\n", lineno); return 2; }
    char nspath[512];
    snprintf(nspath, sizeof nspath, "/run/netns/%s", ns);
    int fd = open(nspath, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) { fprintf(stderr, "bbnsconf: line %d: enter %s: %s\n", lineno, nspath, strerror(errno)); return 1; }
    close(fd);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) { perror("bbnsconf: socket"); return 1; }
    if (set_up(s, "lo") < 0) { fprintf(stderr, "bbnsconf: line %d: lo up in %s: %s\n", lineno, ns, strerror(errno)); return 1; }
    if (strcmp(cidr, "-") != 0 && set_addr(s, ifname, cidr) < 0) { fprintf(stderr, "bbnsconf: line %d: address %s on %s in %s: %s\n", lineno, cidr, ifname, ns, strerror(errno)); return 1; }
    if (set_up(s, ifname) < 0) { fprintf(stderr, "bbnsconf: line %d: %s up in %s: %s\n", lineno, ifname, ns, strerror(errno)); return 1; }
    close(s);
    char *kv;
    while ((kv = strtok_r(NULL, " \t\r\n", &save))) {
      if (write_sysctl(kv) < 0) { fprintf(stderr, "bbnsconf: line %d: sysctl %s in %s: %s\n", lineno, kv, ns, strerror(errno)); return 1; }
    }
    done++;
  }
  printf("%d\n", done);
  return 0;
}
