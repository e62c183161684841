/*
 * kubox pause: the process that holds a pod sandbox's namespaces open.
 *
 * Freestanding and static: no libc, raw system calls, `_start` entry. As PID 1
 * of a pod it exits 0 on SIGINT/SIGTERM, reaps every child on SIGCHLD and
 * otherwise sleeps until a signal arrives.
 *
 * Built by build.rs with: -nostdlib -static -Os -fno-stack-protector -ffreestanding
 * Copyright The kubox Authors. SPDX-License-Identifier: Apache-2.0
 */

#define SIGINT 2
#define SIGTERM 15
#define SIGCHLD 17
#define WNOHANG 1
#define SA_NOCLDSTOP 0x00000001UL
#define SA_RESTORER 0x04000000UL
#define SA_RESTART 0x10000000UL

#if defined(__x86_64__)
#define SYS_rt_sigaction 13
#define SYS_rt_sigreturn 15
#define SYS_pause 34
#define SYS_wait4 61
#define SYS_exit_group 231
#elif defined(__aarch64__)
#define SYS_ppoll 73
#define SYS_exit_group 94
#define SYS_rt_sigaction 134
#define SYS_rt_sigreturn 139
#define SYS_wait4 260
#else
#error "kubox pause: unsupported architecture (x86_64 and aarch64 only)"
#endif

/* The kernel's view of struct sigaction on x86_64 and aarch64. */
struct ksigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

static long sys4(long n, long a, long b, long c, long d)
{
#if defined(__x86_64__)
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
#else
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3)
			 : "memory");
	return x0;
#endif
}

/* Signal return trampoline (SA_RESTORER) and process entry point. */
void kubox_restorer(void);
void _start(void);
__asm__(
	".text\n"
	".globl kubox_restorer\n"
	"kubox_restorer:\n"
#if defined(__x86_64__)
	"	mov $15, %eax\n" /* SYS_rt_sigreturn */
	"	syscall\n"
	".globl _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	and $-16, %rsp\n"
	"	call kubox_main\n"
	"	hlt\n"
#else
	"	mov x8, #139\n" /* SYS_rt_sigreturn */
	"	svc #0\n"
	".globl _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	bl kubox_main\n"
	"	brk #0\n"
#endif
);

static __attribute__((noreturn)) void exit_group(int code)
{
	for (;;)
		sys4(SYS_exit_group, code, 0, 0, 0);
}

static void on_terminate(int sig)
{
	(void)sig;
	exit_group(0);
}

static void on_child(int sig)
{
	(void)sig;
	while (sys4(SYS_wait4, -1, 0, WNOHANG, 0) > 0)
		;
}

static void install(int sig, void (*handler)(int), unsigned long extra)
{
	struct ksigaction sa;
	sa.handler = handler;
	sa.flags = SA_RESTORER | SA_RESTART | extra;
	sa.restorer = kubox_restorer;
	sa.mask = 0;
	if (sys4(SYS_rt_sigaction, sig, (long)&sa, 0, sizeof(sa.mask)) < 0)
		exit_group(1);
}

__attribute__((noreturn, used)) void kubox_main(void)
{
	install(SIGINT, on_terminate, 0);
	install(SIGTERM, on_terminate, 0);
	install(SIGCHLD, on_child, SA_NOCLDSTOP);
	for (;;) {
#if defined(__x86_64__)
		sys4(SYS_pause, 0, 0, 0, 0);
#else
		/* arm64 has no pause(2): ppoll with no fds and no timeout sleeps until a signal. */
		sys4(SYS_ppoll, 0, 0, 0, 0);
#endif
	}
}
