/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_util.c - helpers shared by the benchmarks (see bench_util.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "bench_util.h"

#include <cmesh.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

const char *bench_name = "bench";
const char *bench_who = "";
void (*bench_die_hook)(void);
bool bench_check_dies;

void bench_die(const char *what, int err)
{
	fprintf(stderr, "%s: %s%s: %s\n", bench_name, bench_who, what,
		err < 0 ? cmesh_strerror(err) : strerror(err));
	fflush(stderr);
	if (bench_die_hook)
		bench_die_hook();
	exit(2);
}

void bench_write_err(const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(STDERR_FILENO, buf, len);

		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

void bench_kill_reap(int pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void *bench_xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		bench_die("calloc", ENOMEM);
	memset(p, 0, n * sz); /* fault the pages in before timing */
	return p;
}

int bench_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		bench_die("opendir /proc/self/fd", errno);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

uint64_t bench_cal_irqs(int cpu)
{
	FILE *f = fopen("/proc/interrupts", "r");
	char line[4096];
	uint64_t sum = UINT64_MAX;

	if (!f)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *end;
		int col = 0;

		while (*p == ' ')
			p++;
		if (strncmp(p, "CAL:", 4) != 0)
			continue;
		sum = 0;
		for (p += 4;; p = end, col++) {
			unsigned long long v = strtoull(p, &end, 10);

			if (end == p)
				break;
			if (cpu < 0 || col == cpu)
				sum += v;
		}
		if (cpu >= col)
			sum = UINT64_MAX; /* no such column */
		break;
	}
	fclose(f);
	return sum;
}

/* ---------------------------------------------------------------------- */
/* Child process                                                          */

volatile pid_t bench_child_pid;
bool bench_is_child;

/* The watchdog's line, made by bench_child_signals(). */
static char child_hung_msg[256];
static size_t child_hung_len;

void bench_child_kill(void)
{
	pid_t pid = bench_child_pid;

	bench_child_pid = 0;
	bench_kill_reap(pid);
}

void bench_child_die_hook(void)
{
	pid_t pid = bench_child_pid;
	int st;

	if (bench_is_child)
		_exit(2);
	if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
		bench_child_pid = 0;
		fprintf(stderr, "%s: the child had ended: %s %d\n", bench_name,
			WIFSIGNALED(st) ? "killed by signal" : "exit status",
			WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
	bench_child_kill();
}

/* SIGINT / SIGTERM / SIGHUP: ends the child, then this process. */
static void child_on_term(int sig)
{
	bench_child_kill();
	raise(sig); /* SA_RESETHAND: the default action once we return */
}

static void child_on_alarm(int sig)
{
	(void)sig;
	bench_write_err(child_hung_msg, child_hung_len);
	bench_child_kill();
	_exit(3);
}

void bench_child_signals(const char *hung)
{
	struct sigaction sa;

	snprintf(child_hung_msg, sizeof(child_hung_msg),
		 "%s: watchdog: %s hung, killing the child\n", bench_name,
		 hung);
	child_hung_len = strlen(child_hung_msg);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = child_on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = child_on_term;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

void bench_child_enter(pid_t parent)
{
	static const int sigs[] = { SIGALRM, SIGCHLD, SIGINT, SIGTERM, SIGHUP };
	struct sigaction dfl, old;

	bench_is_child = true;
	bench_who = "child: ";
	bench_child_pid = 0;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
			sigaction(sigs[i], &dfl, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(2);
}

int bench_child_wait(void)
{
	pid_t pid = bench_child_pid;
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			bench_die("waitpid", errno);
	bench_child_pid = 0;
	return st;
}

void bench_child_reap(int sig)
{
	int st = bench_child_wait();
	bool ok = sig ? WIFSIGNALED(st) && WTERMSIG(st) == sig :
			WIFEXITED(st) && WEXITSTATUS(st) == 0;

	if (!ok) {
		fprintf(stderr, "%s: the child ended badly (0x%x)\n",
			bench_name, st);
		exit(2);
	}
}

void bench_check_echo(const struct bench_msg *r, uint64_t seq, uint64_t t0)
{
	if (r->seq == seq && r->stamp == t0)
		return;
	fprintf(stderr,
		"%s: bad echo: seq %" PRIu64 " (want %" PRIu64
		"), stamp %" PRIu64 " (want %" PRIu64 ")\n",
		bench_name, r->seq, seq, r->stamp, t0);
	if (bench_check_dies)
		bench_die("round trip", EPROTO);
	exit(2);
}

void bench_check_seq(uint64_t got, uint64_t want)
{
	if (got == want)
		return;
	fprintf(stderr,
		"%s: stream out of order: seq %" PRIu64 ", want %" PRIu64 "\n",
		bench_name, got, want);
	if (bench_check_dies)
		bench_die("stream", EPROTO);
	exit(2);
}

/* ---------------------------------------------------------------------- */
/* Clock                                                                  */

bool bench_clock_tsc;
double bench_ns_per_tick = 1.0;
uint64_t bench_clock_step = 1;

uint64_t bench_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool cpuinfo_has_flag(const char *flag)
{
	char line[8192];
	bool found = false;
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		char *rest = strchr(line, ':');

		for (char *tok = strtok(rest ? rest + 1 : line, " \t\n"); tok;
		     tok = strtok(NULL, " \t\n")) {
			if (strcmp(tok, flag) == 0) {
				found = true;
				break;
			}
		}
		break;
	}
	fclose(f);
	return found;
}

void bench_clock_setup(bool smoke)
{
	const char *env = getenv("CMESH_BENCH_CLOCK");
	bool want_tsc = BENCH_HAVE_TSC && cpuinfo_has_flag("constant_tsc") &&
			cpuinfo_has_flag("nonstop_tsc");

	if (env && strcmp(env, "mono") == 0)
		want_tsc = false;
	if (!want_tsc) {
		bench_clock_tsc = false;
		bench_ns_per_tick = 1.0;
		return;
	}
	bench_clock_tsc = true;
	uint64_t span = smoke ? 20000000u : 100000000u;
	uint64_t n0 = bench_mono_ns(), c0 = bench_now_ticks(), n1, c1;

	do {
		n1 = bench_mono_ns();
		c1 = bench_now_ticks();
	} while (n1 - n0 < span);
	bench_ns_per_tick = (double)(n1 - n0) / (double)(c1 - c0);
}

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

void bench_clock_measure_step(void)
{
	uint64_t g = 0;

	for (int i = 0; i < 10000; i++) {
		uint64_t a = bench_now_ticks(), b = bench_now_ticks();

		g = gcd_u64(g, b - a);
	}
	bench_clock_step = g ? g : 1;
}

double bench_rate(uint64_t n, uint64_t ticks)
{
	return (double)n / ((double)ticks * bench_ns_per_tick * 1e-9);
}

bool bench_pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* pid 0: the calling thread. */
	if (sched_setaffinity(0, sizeof(set), &set) == 0)
		return true;
	fprintf(stderr, "%s: %swarning: cannot pin to CPU %d: %s\n", bench_name,
		bench_who, cpu, strerror(errno));
	return false;
}

bool bench_cpus_usable(int a, int b)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return false;
	return CPU_ISSET(a, &set) && CPU_ISSET(b, &set);
}

void bench_cpu_model(char *buf, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) != 0 || !colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, len, "%s", colon);
		break;
	}
	fclose(f);
}

void bench_cpu_usage_read(struct bench_cpu_usage *u)
{
	unsigned long long v[8] = { 0 }, ut = 0, st = 0, cut = 0, cst = 0;
	char line[1024];
	FILE *f;

	memset(u, 0, sizeof(*u));
	f = fopen("/proc/stat", "r");
	if (f) {
		if (fgets(line, sizeof(line), f) &&
		    sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
			   &v[7]) == 8) {
			/* user nice system idle iowait irq softirq steal */
			u->busy = v[0] + v[1] + v[2] + v[5] + v[6];
			u->steal = v[7];
			u->total = u->busy + v[3] + v[4] + v[7];
		}
		fclose(f);
	}
	f = fopen("/proc/self/stat", "r");
	if (f) {
		/* Fields 14..17 (utime stime cutime cstime) follow "(comm)". */
		if (fgets(line, sizeof(line), f)) {
			char *p = strrchr(line, ')');

			if (p && sscanf(p + 1,
					" %*c %*d %*d %*d %*d %*d %*u %*u %*u "
					"%*u %*u %llu %llu %llu %llu",
					&ut, &st, &cut, &cst) == 4)
				u->self = ut + st + cut + cst;
		}
		fclose(f);
	}
}

void bench_print_footer(const struct bench_cpu_usage *u0,
			const struct bench_cpu_usage *u1, bool smoke, int fails)
{
	if (u1->total > u0->total) {
		double all = (double)(u1->total - u0->total);
		double busy = (double)(u1->busy - u0->busy);
		double self = (double)(u1->self - u0->self);
		double other = busy > self ? (busy - self) / all : 0.0;
		double steal = (double)(u1->steal - u0->steal) / all;

		printf("# other processes used %.1f%% and host steal %.1f%% of "
		       "all CPUs during the run%s\n",
		       100.0 * other, 100.0 * steal,
		       other + steal > 0.05 ? ": numbers DISTURBED" : "");
		bench_json_footer(other + steal > 0.05 ? 1 : 0);
	} else {
		bench_json_footer(-1);
	}
	if (smoke)
		printf("# smoke mode: counts too small for stable percentiles\n");
	printf("# %s\n", fails ? "some targets FAIL" : "all targets PASS");
}

void bench_print_wall(bool smoke, double secs)
{
	if (smoke)
		printf("# smoke: the targets are shown but never change the "
		       "exit status\n");
	printf("# wall time %.2fs\n", secs);
}

/* ---------------------------------------------------------------------- */
/* Header line                                                            */

void bench_cflags(char *buf, size_t len, const char *s)
{
	size_t n;

	snprintf(buf, len, "%s", s);
	n = strlen(buf);
	if (n >= 2 && buf[0] == '"' && buf[n - 1] == '"') {
		memmove(buf, buf + 1, n - 2);
		buf[n - 2] = '\0';
	}
}

void bench_print_header(const char *flags, const char *cpus_label, int cpu_a,
			int cpu_b, bool two_cpus, bool smoke)
{
	char cpu[256], ebuf[128], kernel[512], clk[128], cpus[128];
	char version[64];
	struct utsname u;
	cmesh_env env = CMESH_ENV_INIT;
	const char *wake;

	bench_cpu_model(cpu, sizeof(cpu));
	if (uname(&u) != 0)
		memset(&u, 0, sizeof(u));
	if (cmesh_env_check(&env, ebuf, sizeof(ebuf)) == 0)
		wake = env.wake == CMESH_WAKE_URING ? "uring" :
		       env.wake == CMESH_WAKE_EPOLL ? "epoll" :
						      "auto";
	else
		wake = "bad-env";
	snprintf(kernel, sizeof(kernel), "%s %s %s", u.sysname, u.release,
		 u.machine);
	snprintf(clk, sizeof(clk), "%s",
		 bench_clock_tsc ? "lfence;rdtsc" : "clock_gettime");
	if (bench_clock_tsc)
		snprintf(clk + strlen(clk), sizeof(clk) - strlen(clk),
			 " %.3f GHz", 1.0 / bench_ns_per_tick);
	snprintf(clk + strlen(clk), sizeof(clk) - strlen(clk), " step %.0f ns",
		 (double)bench_clock_step * bench_ns_per_tick);
	snprintf(cpus, sizeof(cpus), "%s %d,%d%s", cpus_label, cpu_a, cpu_b,
		 two_cpus ? "" : " (UNAVAILABLE)");
	snprintf(version, sizeof(version), "%d.%d.%d wake=%s",
		 CMESH_VERSION_MAJOR, CMESH_VERSION_MINOR, CMESH_VERSION_PATCH,
		 wake);
	printf("# %s | cpu: %s | kernel: %s | cc: %s | flags: %s | clock: %s | "
	       "%s | cmesh %s%s\n",
	       bench_name, cpu, kernel, BENCH_CC __VERSION__, flags, clk, cpus,
	       version, smoke ? " | SMOKE" : "");
	bench_json_header(cpu, kernel, flags, clk, cpus, version, smoke);
}

/* ---------------------------------------------------------------------- */
/* Samples and results                                                    */

int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

uint64_t bench_pct(const uint64_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)((double)n * p / 100.0 + 0.999999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

double bench_median(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_fill_latency(struct bench_result *r, uint64_t *v, size_t n,
			double scale)
{
	qsort(v, n, sizeof(*v), bench_cmp_u64);
	r->p50 = (double)bench_pct(v, n, 50.0) * scale;
	r->p99 = (double)bench_pct(v, n, 99.0) * scale;
	r->p999 = (double)bench_pct(v, n, 99.9) * scale;
	r->nlat = n;
	for (int i = 0; i < BENCH_NQ; i++)
		r->q[i] = (double)bench_pct(v, n, (double)i) * scale;
}

void bench_fill_rtt(struct bench_result *r, uint64_t *v, uint64_t n,
		    uint64_t elapsed)
{
	r->n = n;
	bench_fill_latency(r, v, n, bench_ns_per_tick);
	r->rate = bench_rate(n, elapsed);
}

void bench_fill_rates(struct bench_result *r, double *rt, size_t reps)
{
	r->rate = bench_median(rt, reps);
	r->rate_lo = rt[0];
	r->rate_hi = rt[reps - 1];
}

double bench_ratio(const struct bench_result *raw, const struct bench_result *x,
		   bool by_rate)
{
	if (by_rate)
		return raw->rate > 0 ? x->rate / raw->rate : 0;
	return raw->p50 > 0 ? x->p50 / raw->p50 : 0;
}

void bench_note_part(struct bench_parts *p, double ratio, double raw)
{
	if (p->n < BENCH_MAX_PARTS)
		p->v[p->n] = ratio;
	if (p->n++ == 0) {
		p->lo = p->hi = ratio;
		p->raw_lo = p->raw_hi = raw;
		return;
	}
	p->lo = ratio < p->lo ? ratio : p->lo;
	p->hi = ratio > p->hi ? ratio : p->hi;
	p->raw_lo = raw < p->raw_lo ? raw : p->raw_lo;
	p->raw_hi = raw > p->raw_hi ? raw : p->raw_hi;
}

void bench_note_round(struct bench_parts *p, uint64_t *raw, uint64_t *cm,
		      size_t n)
{
	double rp, cp;

	qsort(raw, n, sizeof(*raw), bench_cmp_u64);
	qsort(cm, n, sizeof(*cm), bench_cmp_u64);
	rp = (double)bench_pct(raw, n, 50.0) * bench_ns_per_tick;
	cp = (double)bench_pct(cm, n, 50.0) * bench_ns_per_tick;
	bench_note_part(p, rp > 0 ? cp / rp : 0, rp);
}

double bench_parts_median(const struct bench_parts *p)
{
	double tmp[BENCH_MAX_PARTS];
	size_t n = p->n < BENCH_MAX_PARTS ? p->n : BENCH_MAX_PARTS;

	memcpy(tmp, p->v, n * sizeof(*tmp));
	return bench_median(tmp, n);
}

void bench_fmt_ns(char *buf, size_t len, double ns)
{
	if (ns < 100.0)
		snprintf(buf, len, "%.1f", ns);
	else
		snprintf(buf, len, "%.0f", ns);
}

void bench_fmt_us(char *buf, size_t len, double ns)
{
	double us = ns / 1000.0;

	snprintf(buf, len, us < 1000.0 ? "%.1f" : "%.0f", us);
}

void bench_fmt_rate(char *buf, size_t len, double r, const char *unit)
{
	const char *sp = *unit ? " " : "";

	if (r >= 1e6)
		snprintf(buf, len, "%.2fM%s%s", r / 1e6, sp, unit);
	else if (r >= 1e3)
		snprintf(buf, len, "%.2fK%s%s", r / 1e3, sp, unit);
	else
		snprintf(buf, len, "%.0f%s%s", r, sp, unit);
}

/* ---------------------------------------------------------------------- */
/* Options                                                                */

bool bench_env_flag(const char *name)
{
	const char *v = getenv(name);

	return v && *v && strcmp(v, "0") != 0;
}

uint64_t bench_parse_count(const char *what, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0' || v == 0 || s[0] == '-') {
		fprintf(stderr, "%s: bad %s: '%s'\n", bench_name, what, s);
		exit(2);
	}
	return (uint64_t)v;
}

void bench_env_count(uint64_t *dst, const char *name)
{
	const char *v = getenv(name);

	if (v && *v)
		*dst = bench_parse_count(name, v);
}

bool bench_common_arg(const char *a, bool *smoke, bool *strict,
		      void (*usage)(FILE *f))
{
	if (strcmp(a, "--smoke") == 0) {
		*smoke = true;
		return true;
	}
	if (strcmp(a, "--strict") == 0) {
		*strict = true;
		return true;
	}
	if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
		usage(stdout);
		exit(0);
	}
	return false;
}

bool bench_iters_arg(int argc, char **argv, int *i, uint64_t *iters)
{
	if (strcmp(argv[*i], "--iters") != 0 || *i + 1 >= argc)
		return false;
	*iters = bench_parse_count("--iters", argv[++*i]);
	return true;
}

uint64_t bench_iters(uint64_t given, bool smoke, uint64_t full,
		     uint64_t smoke_n)
{
	uint64_t n = smoke ? smoke_n : full;

	bench_env_count(&n, "CMESH_BENCH_ITERS");
	return given ? given : n;
}

void bench_bad_arg(const char *a, void (*usage)(FILE *f))
{
	fprintf(stderr, "%s: bad argument '%s'\n", bench_name, a);
	usage(stderr);
	exit(2);
}

pid_t bench_fork_pair(int *sock)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		bench_die("socketpair", errno);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	close(sv[pid == 0 ? 0 : 1]);
	*sock = sv[pid == 0 ? 1 : 0];
	if (pid > 0)
		bench_child_pid = pid;
	return pid;
}

void bench_print_parts(const char *what, const char *ref,
		       const struct bench_parts *p)
{
	char lo[16], hi[16];

	if (p->n == 0)
		return;
	bench_fmt_ns(lo, sizeof(lo), p->raw_lo);
	bench_fmt_ns(hi, sizeof(hi), p->raw_hi);
	printf("# %s: per-round p50 ratio median %.2fx (%.2f..%.2fx) over %u "
	       "rounds, %s p50 %s..%s ns\n",
	       what, bench_parts_median(p), p->lo, p->hi, p->n, ref, lo, hi);
}

double bench_scale_env(const char *prog)
{
	const char *s = getenv("CMESH_BENCH_SCALE");
	char *end;
	double v;

	if (!s || !*s)
		return 1.0;
	v = strtod(s, &end);
	if (*end != '\0' || !(v > 0.0) || v > 1e3) {
		fprintf(stderr, "%s: bad CMESH_BENCH_SCALE '%s'\n", prog, s);
		exit(2);
	}
	return v;
}

bool bench_only_arg(int argc, char **argv, int *i, int max, int *only)
{
	const char *n = *i + 1 < argc ? argv[*i + 1] : NULL;

	if (strcmp(argv[*i], "--only") != 0 || !n || strlen(n) != 1 ||
	    n[0] < '1' || n[0] > '0' + max)
		return false;
	*only = n[0] - '0';
	(*i)++;
	return true;
}

void bench_ev_put(struct bench_ev_line *l, int efd, const struct bench_msg *m)
{
	uint64_t one = 1;

	memcpy(l->body, m, sizeof(l->body));
	/* The eventfd write publishes the line; pairs with bench_ev_get. */
	atomic_thread_fence(memory_order_release);
	if (write(efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		bench_die("eventfd write", errno);
}

void bench_ev_get(struct bench_ev_line *l, int efd, struct bench_msg *out)
{
	uint64_t v;

	while (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		if (errno != EINTR)
			bench_die("eventfd read", errno);
	/* Pairs with bench_ev_put's fence before the eventfd write. */
	atomic_thread_fence(memory_order_acquire);
	memcpy(out, l->body, sizeof(*out));
}

void bench_opts_parse(struct bench_opts *o, const char *name, int max_only,
		      void (*usage)(FILE *f), int argc, char **argv)
{
	o->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	o->scale = bench_scale_env(name);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &o->smoke, &o->strict, usage))
			continue;
		if (!bench_only_arg(argc, argv, &i, max_only, &o->only))
			bench_bad_arg(a, usage);
	}
}

uint64_t bench_opts_scaled(const struct bench_opts *o, uint64_t full,
			   uint64_t smoke, uint64_t min)
{
	double v = (double)(o->smoke ? smoke : full) * o->scale;

	return v < (double)min ? min : (uint64_t)v;
}
