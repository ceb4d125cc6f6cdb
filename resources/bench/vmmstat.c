/*
 * vmmstat: runs a VMM and reports when it started, when it exited and its
 * peak RSS, without counting this launcher's memory.
 *
 *   vmmstat OUTFILE CMD [ARG]...
 *
 * Writes "start_ns exit_ns vmhwm_kib status" (CLOCK_MONOTONIC, ns) to
 * OUTFILE. start is just before fork; exit is when waitpid reaps the VMM.
 * Peak RSS is VmHWM read from /proc/PID/status at the VMM's exit stop
 * (PTRACE_O_TRACEEXIT: the process is stopped in do_exit before its memory
 * is released; wait4's ru_maxrss would include this launcher's memory,
 * inherited at fork). The VMM's stdio is this program's.
 * Build: cc -O2 -o vmmstat vmmstat.c
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static long vmhwm(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: vmmstat OUTFILE CMD [ARG]...\n");
		return 2;
	}
	unsigned long long start = now_ns();
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 2;
	}
	if (pid == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		execvp(argv[2], argv + 2);
		perror("execvp");
		_exit(127);
	}
	long hwm = -1;
	int status;
	for (;;) {
		if (waitpid(pid, &status, __WALL) < 0) {
			perror("waitpid");
			return 2;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			break;
		int sig = WSTOPSIG(status);
		if (sig == SIGTRAP && (status >> 16) == PTRACE_EVENT_EXIT) {
			hwm = vmhwm(pid);
			sig = 0;
		} else if (sig == SIGTRAP && (status >> 16) == 0 && hwm == -1) {
			/* the exec stop: ask for the exit stop */
			ptrace(PTRACE_SETOPTIONS, pid, 0,
			       PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL);
			sig = 0;
		}
		ptrace(PTRACE_CONT, pid, 0, sig);
	}
	unsigned long long end = now_ns();
	FILE *out = fopen(argv[1], "w");
	if (!out) {
		perror(argv[1]);
		return 2;
	}
	fprintf(out, "%llu %llu %ld %d\n", start, end, hwm,
		WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	fclose(out);
	return 0;
}
