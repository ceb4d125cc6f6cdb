/*
 * blkbench: block-device throughput inside a guest, for comparing VMMs.
 *
 *   blkbench seqread  DEV MIB    read MIB MiB from offset 0 in 1 MiB blocks
 *   blkbench seqwrite DEV MIB    write MIB MiB in 1 MiB blocks, then fdatasync
 *   blkbench randread DEV COUNT  COUNT 4 KiB reads at random aligned offsets
 *   blkbench randqd DEPTH SECS DEV...
 *                                4 KiB reads at random aligned offsets, DEPTH
 *                                in flight on each DEV, for SECS seconds
 *
 * All I/O is O_DIRECT (the guest's page cache stays out of it). seqread,
 * seqwrite and randread make one request at a time. randqd keeps DEPTH
 * requests in flight per device with DEPTH threads per device, each making
 * synchronous 4 KiB preads one after another: the default guest kernel is
 * built from tinyconfig and has neither CONFIG_AIO nor CONFIG_IO_URING, and
 * with O_DIRECT each blocked pread is one request in the device's queue.
 * All threads start together (a barrier) and stop at the same deadline;
 * the time is from the start to the last read's return. With several
 * devices a second line gives each one's reads.
 *
 * Prints one line: "BLKBENCH <mode> <amount> <seconds> <rate>" with the rate
 * in MB/s (10^6 bytes) or IOPS; randqd's mode is "randread-qdDEPTH" on one
 * device and "randread-qdDEPTHxN" on N devices, its amount the reads done
 * (all devices), its rate their total IOPS. Built static by
 * resources/bench/lab-block.sh and run as the guest's init program.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: blkbench seqread|seqwrite|randread DEV N\n"
			"       blkbench randqd DEPTH SECS DEV...\n");
	exit(2);
}

/* randqd: one reader thread; DEPTH of them share each device's fd. */
struct reader {
	pthread_t thread;
	int fd;
	uint64_t blocks;	/* 4 KiB blocks on the device */
	uint64_t seed;
	long reads;
	double end;	/* when its last read returned */
	int done;	/* set (atomically) after end */
};

static pthread_barrier_t start;
static double deadline;

static void *reader_run(void *arg)
{
	struct reader *r = arg;
	void *buf;
	if (posix_memalign(&buf, 4096, 4096) != 0)
		die("blkbench: posix_memalign");
	uint64_t x = r->seed;
	pthread_barrier_wait(&start);
	/* deadline is set by the main thread before it reaches the barrier. */
	while (now() < deadline) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (pread(r->fd, buf, 4096, (off_t)(x % r->blocks) * 4096) != 4096)
			die("blkbench: pread");
		r->reads++;
	}
	r->end = now();
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int randqd(int argc, char **argv)
{
	if (argc < 5)
		usage();
	int depth = atoi(argv[2]), ndev = argc - 4;
	double secs = atof(argv[3]);
	if (depth < 1 || secs <= 0)
		usage();
	struct reader *readers = calloc((size_t)depth * ndev, sizeof *readers);
	if (!readers)
		die("blkbench: calloc");
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	pthread_barrier_init(&start, NULL, depth * ndev + 1);
	for (int d = 0; d < ndev; d++) {
		int fd = open(argv[4 + d], O_RDONLY | O_DIRECT);
		if (fd < 0)
			die("blkbench: open");
		uint64_t size;
		if (ioctl(fd, BLKGETSIZE64, &size) != 0)
			die("blkbench: BLKGETSIZE64");
		for (int i = 0; i < depth; i++) {
			struct reader *r = &readers[d * depth + i];
			r->fd = fd;
			r->blocks = size / 4096;
			/* Distinct, nonzero xorshift seeds; thread 0 of
			 * device 0 repeats randread's sequence. */
			r->seed = 88172645463325252ULL + (uint64_t)(d * depth + i) * 0x9e3779b97f4a7c15ULL;
			if (r->seed == 0)
				r->seed = 1;
			int e = pthread_create(&r->thread, &attr, reader_run, r);
			if (e != 0) {
				fprintf(stderr, "blkbench: pthread_create: %s\n", strerror(e));
				return 1;
			}
		}
	}
	double t0 = now();
	deadline = t0 + secs;
	pthread_barrier_wait(&start);
	/* Sleep through the run, then wait for the readers' last requests,
	 * but not forever: a request the device never completes leaves its
	 * reader in pread for good (and the process can never exit). That is
	 * reported (a lost request, not a stalled guest) and, when blkbench
	 * runs under the guest's init program (its parent is PID 1), the
	 * guest restarts, ending the VM. */
	struct timespec tick = {0, 1000000};
	struct timespec rest = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
	nanosleep(&rest, NULL);
	int pending;
	do {
		pending = 0;
		for (int i = 0; i < depth * ndev; i++)
			pending += !__atomic_load_n(&readers[i].done, __ATOMIC_ACQUIRE);
	} while (pending && now() < deadline + 10 && nanosleep(&tick, NULL) == 0);
	if (pending) {
		printf("blkbench: %d of %d reads still pending 10 s after the deadline: "
		       "lost requests? restarting\n", pending, depth * ndev);
		fflush(stdout);
		if (getppid() == 1)
			reboot(RB_AUTOBOOT);
		return 1;
	}
	long reads = 0;
	double last = t0;
	for (int i = 0; i < depth * ndev; i++) {
		pthread_join(readers[i].thread, NULL);
		reads += readers[i].reads;
		if (readers[i].end > last)
			last = readers[i].end;
	}
	double dt = last - t0;
	if (ndev > 1) {
		printf("blkbench: reads per device:");
		for (int d = 0; d < ndev; d++) {
			long n = 0;
			for (int i = 0; i < depth; i++)
				n += readers[d * depth + i].reads;
			printf(" %s %ld", argv[4 + d], n);
		}
		printf("\n");
	}
	char mode[48];
	if (ndev == 1)
		snprintf(mode, sizeof mode, "randread-qd%d", depth);
	else
		snprintf(mode, sizeof mode, "randread-qd%dx%d", depth, ndev);
	printf("BLKBENCH %s %ld %.3f %.0f\n", mode, reads, dt, reads / dt);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "randqd") == 0)
		return randqd(argc, argv);
	if (argc != 4)
		usage();
	const char *mode = argv[1];
	long n = atol(argv[3]);
	int writing = strcmp(mode, "seqwrite") == 0;
	int fd = open(argv[2], (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
	if (fd < 0)
		die("blkbench: open");
	uint64_t size;
	if (ioctl(fd, BLKGETSIZE64, &size) != 0)
		die("blkbench: BLKGETSIZE64");
	void *buf;
	if (posix_memalign(&buf, 1 << 20, 1 << 20) != 0)
		die("blkbench: posix_memalign");
	memset(buf, 0x5a, 1 << 20);
	double t0 = now();
	if (strcmp(mode, "randread") == 0) {
		uint64_t blocks = size / 4096, x = 88172645463325252ULL;
		for (long i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096)
				die("blkbench: pread");
		}
		double dt = now() - t0;
		printf("BLKBENCH randread %ld %.3f %.0f\n", n, dt, n / dt);
	} else {
		if ((uint64_t)n << 20 > size) {
			fprintf(stderr, "blkbench: %s holds %llu bytes, less than %ld MiB\n",
				argv[2], (unsigned long long)size, n);
			return 1;
		}
		for (long i = 0; i < n; i++) {
			ssize_t r = writing ? pwrite(fd, buf, 1 << 20, (off_t)i << 20)
					    : pread(fd, buf, 1 << 20, (off_t)i << 20);
			if (r != 1 << 20)
				die(writing ? "blkbench: pwrite" : "blkbench: pread");
		}
		if (writing && fdatasync(fd) != 0)
			die("blkbench: fdatasync");
		double dt = now() - t0;
		printf("BLKBENCH %s %ld %.3f %.1f\n", mode, n, dt, (n << 20) / dt / 1e6);
	}
	return 0;
}
