/* TCP load for `kubox-bench net`, built static by the bench and run in pods.
 *   tcpbench serve PORT
 *       one epoll loop. A connection whose first byte is 'c' is answered at once (8 bytes)
 *       and closed by the server; any other is read to EOF, then answered the byte count
 *       received (8 bytes, big-endian) and closed.
 *   tcpbench run SECONDS PORT LABEL ADDR [LABEL ADDR...]
 *       waits until every ADDR:PORT accepts (up to 60 s), then, for each target in turn and
 *       twice over (so drift on a shared machine hits both alike), measures
 *         crr:  connect, send 'c', read the answer, close, for SECONDS (a whole connection
 *               per transaction, the server closing first so the client keeps no
 *               TIME_WAIT ports: what a proxy's per-flow cost shows in)
 *         bulk: one connection sending 64 KiB writes for SECONDS, then half-close and
 *               read the server's count: throughput of bytes the server received
 *       and prints lines `RESULT <label> crr <connections> <seconds>` and
 *       `RESULT <label> bulk <bytes> <seconds>`. Exits 1 if a target never answers. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int serve(int port) {
    static uint64_t counts[MAXFD];
    static char buf[1 << 16];
    struct sockaddr_in a;
    struct epoll_event ev, evs[256];
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int ep = epoll_create1(0);
    if (l < 0 || ep < 0) {
        perror("socket");
        return 2;
    }
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) {
        perror("bind/listen");
        return 2;
    }
    ev.events = EPOLLIN;
    ev.data.fd = l;
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) {
                        close(c);
                        continue;
                    }
                    counts[c] = 0;
                    ev.events = EPOLLIN;
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    if (counts[fd] == 0 && buf[0] == 'c') {
                        r = 0; /* a crr transaction: answer now */
                        counts[fd] = 1;
                    } else {
                        counts[fd] += (uint64_t)r;
                        continue;
                    }
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (r == 0) {
                    unsigned char out[8];
                    for (int b = 0; b < 8; b++)
                        out[b] = (unsigned char)(counts[fd] >> (56 - 8 * b));
                    if (write(fd, out, sizeof out) < 0) {
                        /* the client went away: nothing to answer */
                    }
                }
                close(fd);
                break;
            }
        }
    }
}

static int dial(const char *addr, int port) {
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1 ||
        connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    return s;
}

/* Reads the server's 8-byte count (after half-closing `s` if `half_close`); -1 on failure. */
static int64_t finish(int s, int half_close) {
    unsigned char in[8];
    size_t got = 0;
    if (half_close)
        shutdown(s, SHUT_WR);
    while (got < sizeof in) {
        ssize_t r = read(s, in + got, sizeof in - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    uint64_t v = 0;
    for (int b = 0; b < 8; b++)
        v = (v << 8) | in[b];
    return (int64_t)v;
}

static int crr(const char *addr, int port, double secs, const char *label) {
    long n = 0;
    double start = now(), end = start + secs, t;
    do {
        int s = dial(addr, port);
        if (s < 0 || write(s, "c", 1) != 1 || finish(s, 0) != 1) {
            fprintf(stderr, "%s: connection %ld to %s:%d failed: %s\n", label, n, addr, port,
                    strerror(errno));
            if (s >= 0)
                close(s);
            return 1;
        }
        char eof;
        if (read(s, &eof, 1) != 0) {
            /* the server closes right after its answer; wait for that so it closed first */
        }
        close(s);
        n++;
        t = now();
    } while (t < end);
    printf("RESULT %s crr %ld %.6f\n", label, n, t - start);
    fflush(stdout);
    return 0;
}

static int bulk(const char *addr, int port, double secs, const char *label) {
    static char buf[1 << 16];
    double start = now(), end = start + secs;
    int s = dial(addr, port);
    if (s < 0) {
        fprintf(stderr, "%s: connect to %s:%d failed: %s\n", label, addr, port, strerror(errno));
        return 1;
    }
    memset(buf, 'x', sizeof buf);
    while (now() < end) {
        if (write(s, buf, sizeof buf) < 0) {
            fprintf(stderr, "%s: write failed: %s\n", label, strerror(errno));
            close(s);
            return 1;
        }
    }
    int64_t got = finish(s, 1);
    double t = now();
    close(s);
    if (got < 0) {
        fprintf(stderr, "%s: no count from the server\n", label);
        return 1;
    }
    printf("RESULT %s bulk %lld %.6f\n", label, (long long)got, t - start);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]));
    if (argc >= 6 && argc % 2 == 0 && strcmp(argv[1], "run") == 0) {
        double secs = atof(argv[2]);
        int port = atoi(argv[3]);
        for (int i = 4; i < argc; i += 2) {
            double deadline = now() + 60;
            int s;
            while ((s = dial(argv[i + 1], port)) < 0) {
                if (now() > deadline) {
                    fprintf(stderr, "%s: %s:%d never answered\n", argv[i], argv[i + 1], port);
                    return 1;
                }
                usleep(100000);
            }
            if (write(s, "c", 1) != 1 || finish(s, 0) != 1) {
                fprintf(stderr, "%s: %s:%d answered wrongly\n", argv[i], argv[i + 1], port);
                return 1;
            }
            close(s);
        }
        for (int round = 0; round < 2; round++)
            for (int i = 4; i < argc; i += 2)
                if (crr(argv[i + 1], port, secs, argv[i]))
                    return 1;
        for (int round = 0; round < 2; round++)
            for (int i = 4; i < argc; i += 2)
                if (bulk(argv[i + 1], port, secs, argv[i]))
                    return 1;
        printf("DONE\n");
        return 0;
    }
    fprintf(stderr, "usage: tcpbench serve PORT | tcpbench run SECONDS PORT LABEL ADDR...\n");
    return 2;
}
