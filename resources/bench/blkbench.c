/*
 * blkbench: block-device throughput inside a guest, for comparing VMMs.
 *
 *   blkbench seqread  DEV MIB    read MIB MiB from offset 0 in 1 MiB blocks
 *   blkbench seqwrite DEV MIB    write MIB MiB in 1 MiB blocks, then fdatasync
 *   blkbench randread DEV COUNT  COUNT 4 KiB reads at random aligned offsets
 *
 * All I/O is O_DIRECT (the guest's page cache stays out of it), one request
 * at a time. Prints one line: "BLKBENCH <mode> <amount> <seconds> <rate>"
 * with the rate in MB/s (10^6 bytes) or IOPS. Built static by
 * resources/bench/lab-block.sh and run as the guest's init program.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: blkbench seqread|seqwrite|randread DEV N\n");
		return 2;
	}
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
