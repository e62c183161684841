/* A UDP echo for the black-box tests (busybox here has no UDP netcat), built static at test
 * time and put into the test image.
 *   udpecho serve PORT      answers every datagram with "<hostname> <sender address>\n"
 *   udpecho send ADDR PORT  sends one datagram and prints the answer; exits 1 when none
 *                           comes within 3 s */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char buf[512];
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        perror("socket");
        return 2;
    }
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        char host[256] = "";
        a.sin_port = htons((unsigned short)atoi(argv[2]));
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("bind");
            return 2;
        }
        gethostname(host, sizeof host - 1);
        for (;;) {
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            int n;
            if (recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len) < 0)
                continue;
            n = snprintf(buf, sizeof buf, "%s %s\n", host, inet_ntoa(from.sin_addr));
            sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
        }
    }
    if (argc == 4 && strcmp(argv[1], "send") == 0) {
        struct timeval tv = {3, 0};
        ssize_t n;
        a.sin_port = htons((unsigned short)atoi(argv[3]));
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
            fprintf(stderr, "bad address %s\n", argv[2]);
            return 2;
        }
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 || send(s, "ping", 4, 0) < 0) {
            perror("send");
            return 1;
        }
        n = recv(s, buf, sizeof buf, 0);
        if (n <= 0) {
            fprintf(stderr, "no answer\n");
            return 1;
        }
        fwrite(buf, 1, (size_t)n, stdout);
        return 0;
    }
    fprintf(stderr, "usage: udpecho serve PORT | udpecho send ADDR PORT\n");
    return 2;
}
