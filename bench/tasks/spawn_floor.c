/* bench/tasks/spawn_floor.c - the scheduler's floor: start the same N processes back to
 * back with posix_spawn and nothing else, as the scheduler starts a task (its own process
 * group, standard input from /dev/null, output to two pipes), then reap them. The read
 * ends are closed at once (the programs measured write nothing), so N is not bounded by
 * the open-file limit.
 *
 *   spawn_floor N DIR PROGRAM   runs `PROGRAM DIR/i` for i = 1..N
 *   spawn_floor -s N FILE PROGRAM   N times: sleeps until the next whole second of the wall
 *                               clock (clock_nanosleep, TIMER_ABSTIME), then runs
 *                               `PROGRAM FILE` and waits for it: the floor of a single task
 *                               started at its due time, waking up included
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

static int spawn_one(char *prog, char *path, pid_t *pid) {
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
  char *args[] = {prog, path, NULL};
  int e = posix_spawn(pid, prog, &fa, &at, args, environ);
  if (e) { fprintf(stderr, "posix_spawn: error %d\n", e); return 1; }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(out[1]);
  close(err[1]);
  close(out[0]);
  close(err[0]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && argv[1][0] == '-' && argv[1][1] == 's') {
    int n = atoi(argv[2]), failed = 0;
    for (int i = 0; i < n; i++) {
      struct timespec due;
      clock_gettime(CLOCK_REALTIME, &due);
      due.tv_sec += 1;
      due.tv_nsec = 0;
      clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &due, NULL);
      pid_t pid;
      int st;
      if (spawn_one(argv[4], argv[3], &pid)) return 1;
      if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    }
    printf("%d\n", failed);
    return failed != 0;
  }
  if (argc != 4) {
    fprintf(stderr, "usage: spawn_floor N DIR PROGRAM | spawn_floor -s N FILE PROGRAM\n");
    return 2;
  }
  int n = atoi(argv[1]);
  char *dir = argv[2], *prog = argv[3];
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  char path[4096];
  long long t0 = now_ns(), first = 0, last = 0;
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/%d", dir, i + 1);
    if (spawn_one(prog, path, &pids[i])) return 1;
    last = now_ns();
    if (i == 0) first = last;
  }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
  }
  printf("%lld %.3f %.3f %d\n", t0, (first - t0) / 1e6, (last - t0) / 1e6, failed);
  return failed != 0;
}
