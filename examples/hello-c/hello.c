#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("hello from a package pallet built (uid %d)\n", (int)getuid());
    return 0;
}
