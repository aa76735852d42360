/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh.h - typed channels between threads and co-located processes.
 */
#ifndef CMESH_H
#define CMESH_H

#include <cmesh/common.h>
#include <cmesh/error.h>
#include <cmesh/type.h>
#include <cmesh/cancel.h>
#include <cmesh/env.h>
#include <cmesh/log.h>
#include <cmesh/channel.h>
#include <cmesh/oneshot.h>
#include <cmesh/rpc.h>
#include <cmesh/cell.h>
#include <cmesh/pipe.h>
#include <cmesh/waitset.h>
#include <cmesh/node.h>

#endif
