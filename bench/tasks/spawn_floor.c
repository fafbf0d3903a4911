/* bench/tasks/spawn_floor.c - the scheduler's floor: start the same N processes back to
 * back with posix_spawn and nothing else, as the scheduler starts a task (its own process
 * group, standard input from /dev/null, output to two pipes), then reap them. The read
 * ends are closed at once (the programs measured write nothing), so N is not bounded by
 * the open-file limit.
 *
 *   spawn_floor N DIR PROGRAM   runs `PROGRAM DIR/i` for i = 1..N
 *
 * Prints, on one line: T0 (CLOCK_REALTIME ns just before the first posix_spawn) and the
 * wall-clock ms from T0 to the return of the first and of the last posix_spawn. The start
 * lags themselves come from what PROGRAM (stamp) writes, minus T0, like the scheduler's
 * from its due time.
 * Build: gcc -O2 -o spawn_floor spawn_floor.c */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: spawn_floor N DIR PROGRAM\n");
    return 2;
  }
  int n = atoi(argv[1]);
  char *dir = argv[2], *prog = argv[3];
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  char path[4096];
  long long t0 = now_ns(), first = 0, last = 0;
  for (int i = 0; i < n; i++) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) { perror("pipe2"); return 1; }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    snprintf(path, sizeof path, "%s/%d", dir, i + 1);
    char *args[] = {prog, path, NULL};
    int e = posix_spawn(&pids[i], prog, &fa, &at, args, environ);
    if (e) { fprintf(stderr, "posix_spawn: error %d\n", e); return 1; }
    last = now_ns();
    if (i == 0) first = last;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(out[1]);
    close(err[1]);
    close(out[0]);
    close(err[0]);
  }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
  }
  printf("%lld %.3f %.3f %d\n", t0, (first - t0) / 1e6, (last - t0) / 1e6, failed);
  return failed != 0;
}
