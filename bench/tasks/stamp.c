/* bench/tasks/stamp.c - the benchmark tasks' command: append the wall-clock time it
 * started (CLOCK_REALTIME, nanoseconds since the epoch) as one line to FILE.
 * Stands in for `touch FILE`, whose modification time has the kernel's coarse clock
 * (a 4 ms tick here), too coarse for lags of a few milliseconds.
 * Build: gcc -O2 -o stamp stamp.c */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (argc != 2) return 2;
  char line[32];
  int n = snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return 1;
  return write(fd, line, (size_t)n) == n && close(fd) == 0 ? 0 : 1;
}
