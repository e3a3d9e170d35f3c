/* The pod sandbox's process for the real node (hack/images.sh builds it into localhost/pause).
 *
 * The kubelet starts one per pod to hold the pod's namespaces while its containers come and go.
 * It does nothing else: it sleeps, reaps children that end up with it (it is PID 1 when a pod
 * shares its PID namespace, and orphans are re-parented to PID 1), and exits on SIGINT or
 * SIGTERM. PID 1 ignores signals it has no handler for, hence the explicit handlers.
 * Built with `gcc -static`, so the image needs nothing but this file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) {
    (void)signo;
    _exit(0);
}

static void reap(int signo) {
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (litgpt-operator real node)");
        return 0;
    }
    struct sigaction on_stop = {0}, on_child = {0};
    on_stop.sa_handler = stop;
    on_child.sa_handler = reap;
    on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGINT, &on_stop, NULL) || sigaction(SIGTERM, &on_stop, NULL)
        || sigaction(SIGCHLD, &on_child, NULL)) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
