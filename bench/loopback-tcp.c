/*
 * loopback-tcp SECONDS: the loopback TCP limit without a language runtime in the way. A child
 * process writes 1 MiB buffers into a 127.0.0.1 connection for SECONDS; the parent reads them
 * and prints the bytes per second it received. bench/migrate.mjs builds and runs it (gcc) next to
 * the same measurement in Node, so the limit a migration is compared with is the kernel's.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

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
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    static char buf[CHUNK];

    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
        die("loopback-tcp: listen");
    pid_t child = fork();
    if (child < 0)
        die("loopback-tcp: fork");
    if (child == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)))
            die("loopback-tcp: connect");
        memset(buf, 0xa5, sizeof(buf));
        for (double t0 = now(); now() - t0 < seconds;) {
            for (size_t off = 0; off < sizeof(buf);) {
                ssize_t n = write(s, buf + off, sizeof(buf) - off);
                if (n <= 0)
                    die("loopback-tcp: write");
                off += n;
            }
        }
        _exit(0);
    }
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("loopback-tcp: accept");
    double t0 = now();
    unsigned long long total = 0;
    for (ssize_t n; (n = read(c, buf, sizeof(buf))) > 0;)
        total += n;
    double elapsed = now() - t0;
    waitpid(child, NULL, 0);
    printf("%.0f\n", total / elapsed);
    return 0;
}
