# Header test (ctest `headers`), run with cmake -P:
#
#   cmake -DCMESH_CC=cc -DCMESH_CXX=c++ -DCMESH_INCLUDE_DIR=include \
#         -DCMESH_WORK_DIR=/tmp/x -P tests/headers/check.cmake
#
# Compiles include/cmesh.h and every include/cmesh/*.h on its own, with only
# include/ on the include path, as C11 and as C++11, warnings as errors.
# Each translation unit includes its header twice (checks the guard).
# Fails listing every header that does not compile.

foreach(var CMESH_CC CMESH_CXX CMESH_INCLUDE_DIR CMESH_WORK_DIR)
	if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
		message(FATAL_ERROR "check.cmake: -D${var}=... is required")
	endif()
endforeach()

set(c_flags -std=c11 -pedantic-errors -Wall -Wextra -Werror -fsyntax-only
	-x c)
set(cxx_flags -std=c++11 -pedantic-errors -Wall -Wextra -Werror
	-fsyntax-only -x c++)

file(GLOB headers RELATIVE "${CMESH_INCLUDE_DIR}"
	"${CMESH_INCLUDE_DIR}/cmesh.h"
	"${CMESH_INCLUDE_DIR}/cmesh/*.h")
list(SORT headers)
if(NOT headers)
	message(FATAL_ERROR "no headers found in ${CMESH_INCLUDE_DIR}")
endif()

file(REMOVE_RECURSE "${CMESH_WORK_DIR}")
file(MAKE_DIRECTORY "${CMESH_WORK_DIR}")

set(failed "")
set(count 0)
foreach(header IN LISTS headers)
	string(MAKE_C_IDENTIFIER "${header}" id)
	set(tu "${CMESH_WORK_DIR}/${id}.tu")
	file(WRITE "${tu}"
		"#include <${header}>\n"
		"#include <${header}>\n"
		"typedef int cmesh_header_test_${id};\n")
	foreach(lang c cxx)
		if(lang STREQUAL "c")
			set(cmd "${CMESH_CC}" ${c_flags})
		else()
			set(cmd "${CMESH_CXX}" ${cxx_flags})
		endif()
		execute_process(
			COMMAND ${cmd} "-I${CMESH_INCLUDE_DIR}" "${tu}"
			RESULT_VARIABLE rc
			OUTPUT_VARIABLE out
			ERROR_VARIABLE out)
		math(EXPR count "${count} + 1")
		if(rc EQUAL 0)
			message(STATUS "ok   ${lang} ${header}")
		else()
			message(STATUS "FAIL ${lang} ${header}\n${out}")
			list(APPEND failed "${lang}:${header}")
		endif()
	endforeach()
endforeach()

# The macros, expanded: usage.c with every compiler (CMESH_CC, CMESH_CXX and
# the optional CMESH_EXTRA_CC / CMESH_EXTRA_CXX, e.g. clang), as C11, C++11
# and C++17, -pedantic -Wall -Wextra -Werror.
set(usage "${CMAKE_CURRENT_LIST_DIR}/usage.c")
set(drivers "c:${CMESH_CC}" "cxx:${CMESH_CXX}")
if(DEFINED CMESH_EXTRA_CC AND NOT CMESH_EXTRA_CC STREQUAL "")
	list(APPEND drivers "c:${CMESH_EXTRA_CC}")
endif()
if(DEFINED CMESH_EXTRA_CXX AND NOT CMESH_EXTRA_CXX STREQUAL "")
	list(APPEND drivers "cxx:${CMESH_EXTRA_CXX}")
endif()
foreach(d IN LISTS drivers)
	string(REGEX REPLACE "^([a-z]+):(.*)$" "\\1" lang "${d}")
	string(REGEX REPLACE "^([a-z]+):(.*)$" "\\2" comp "${d}")
	if(lang STREQUAL "c")
		set(stds c11)
		set(x c)
	else()
		set(stds c++11 c++17)
		set(x c++)
	endif()
	foreach(std IN LISTS stds)
		execute_process(
			COMMAND "${comp}" -std=${std} -pedantic-errors -Wall
				-Wextra -Werror -fsyntax-only -x ${x}
				"-I${CMESH_INCLUDE_DIR}" "${usage}"
			RESULT_VARIABLE rc
			OUTPUT_VARIABLE out
			ERROR_VARIABLE out)
		math(EXPR count "${count} + 1")
		if(rc EQUAL 0)
			message(STATUS "ok   ${comp} -std=${std} usage.c")
		else()
			message(STATUS "FAIL ${comp} -std=${std} usage.c\n${out}")
			list(APPEND failed "${comp}:${std}:usage.c")
		endif()
	endforeach()
endforeach()

if(failed)
	list(LENGTH failed nfailed)
	message(FATAL_ERROR
		"${nfailed} of ${count} header compilations failed: ${failed}")
endif()
message(STATUS "all ${count} header compilations passed")
