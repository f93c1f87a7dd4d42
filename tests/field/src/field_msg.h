/* field_msg.h: the 64-byte request/reply of the client/server scenarios (see field_client.c). */
#ifndef FIELD_MSG_H
#define FIELD_MSG_H
#include <stdint.h>
struct msg {
    uint64_t id;
    double issued_us;
    char pad[48];
};
#endif
