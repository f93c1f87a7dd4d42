/* A shared library in the middle of a deep call chain: the program calls lib_enter, which
 * descends three more functions and calls the program back. Built without frame pointers. */
#ifndef DEEPCHAIN_H
#define DEEPCHAIN_H

typedef long (*deepchain_leaf)(long);

long lib_enter(long n, deepchain_leaf leaf);

#endif
