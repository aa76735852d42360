/*
 * tests/headers/usage.c - every public macro expanded once, compiled by
 * check.cmake as C11, C++11 and C++17 with each compiler it is given,
 * -Wall -Wextra -pedantic -Werror: wrappers a program does not call, a
 * static descriptor, one after an extern declaration (C), an rpc request.
 */
#include <cmesh.h>

struct ping {
	int x;
	int fd;
	cmesh_sender *tx;
};
struct args {
	uint32_t op;
};
struct resp {
	uint64_t v;
};
struct with_cell {
	cmesh_cell_port cfg;
	cmesh_pipe_writer_port w;
	cmesh_pipe_reader_port r;
};

CMESH_CHANNEL_PROTOTYPE(ping, struct ping)
CMESH_TYPE_DEFINE_PLAIN(resp_type, struct resp);
CMESH_TYPE_DEFINE(ping_type, struct ping, CMESH_FIELD_FD(struct ping, fd),
		  CMESH_FIELD_SENDER(struct ping, tx, resp_type));
CMESH_RPC_REQUEST(blk_req, struct args, resp_type);
CMESH_TYPE_DEFINE(with_cell_type, struct with_cell,
		  CMESH_FIELD_CELL(struct with_cell, cfg),
		  CMESH_FIELD_PIPE_WRITER(struct with_cell, w),
		  CMESH_FIELD_PIPE_READER(struct with_cell, r));
#ifndef __cplusplus
extern const cmesh_type args_type;
CMESH_TYPE_DEFINE_PLAIN(args_type, struct args);
static CMESH_TYPE_DEFINE(sping_type, struct ping,
			 CMESH_FIELD_FD(struct ping, fd));
#define SPING_FIELDS sping_type.nfields
#else
#define SPING_FIELDS 1u
#endif

int main(void)
{
	return (int)(ping_type.nfields + blk_req_type.size + SPING_FIELDS +
		     with_cell_type.nfields) == 0;
}
