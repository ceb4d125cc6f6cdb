/*
 * stamp: run a command and time-stamp each line it prints.
 *
 *   stamp [-k TEXT] CMD [ARGS...]
 *
 * The command's stdout and stderr (one pipe, so in order) are copied to
 * stdout, each line prefixed with "[MS] ", the milliseconds (to the
 * microsecond) since just before the command was started, on the monotonic
 * clock. A last line "[MS] STAMP-EXIT N" gives the time the command ended and
 * its exit status (128+signal when killed); a first line "[0.000]
 * STAMP-START NS" gives the start itself in CLOCK_MONOTONIC nanoseconds, to
 * relate a VMM's own timestamps to it. stamp's own status is the
 * command's. With -k, the command is killed (SIGKILL) once a line containing
 * TEXT has been printed, with its whole process group (a `timeout`
 * wrapper and the VMM under it): for a VMM that would otherwise never exit. Built statically for the nested lab by prepare.sh; used to time
 * a VMM from process start to each line its guest prints.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double ms_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1e3 + (now.tv_nsec - t0->tv_nsec) / 1e6;
}

int main(int argc, char **argv)
{
	const char *kill_text = NULL;
	if (argc > 2 && strcmp(argv[1], "-k") == 0) {
		kill_text = argv[2];
		argv += 2;
		argc -= 2;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: stamp [-k TEXT] CMD [ARGS...]\n");
		return 2;
	}
	int fds[2];
	if (pipe(fds) != 0) {
		perror("stamp: pipe");
		return 2;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	printf("[0.000] STAMP-START %lld\n", (long long)t0.tv_sec * 1000000000LL + t0.tv_nsec);
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("stamp: fork");
		return 2;
	}
	if (pid == 0) {
		/* Its own process group, so -k kills wrappers (timeout) and the VMM. */
		setpgid(0, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		execvp(argv[1], argv + 1);
		fprintf(stderr, "stamp: cannot run %s: %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	char line[8192];
	size_t len = 0;
	double line_start = -1;
	char buf[4096];
	for (;;) {
		ssize_t n = read(fds[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (line_start < 0)
				line_start = ms_since(&t0);
			if (buf[i] != '\n' && len < sizeof line - 1) {
				line[len++] = buf[i];
				continue;
			}
			if (buf[i] != '\n')
				line[len++] = buf[i];
			printf("[%.3f] %.*s\n", line_start, (int)len, line);
			fflush(stdout);
			line[len] = 0;
			len = 0;
			if (kill_text && strstr(line, kill_text)) {
				kill(-pid, SIGKILL);
				goto reap;
			}
			line_start = -1;
		}
	}
	if (len > 0)
		printf("[%.3f] %.*s\n", line_start, (int)len, line);
reap:;
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("[%.3f] STAMP-EXIT %d\n", ms_since(&t0), rc);
	return rc;
}
