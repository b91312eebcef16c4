#ifndef ESCROWFLEET_CLIBPQ_SHIM_H
#define ESCROWFLEET_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
