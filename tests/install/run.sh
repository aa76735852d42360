#!/usr/bin/env bash
# Install test (ctest `install`):
#
#   tests/install/run.sh BUILD_DIR [LIBDIR]
#
# Installs BUILD_DIR into a temporary prefix, then builds and runs
# tests/install/consumer/ twice: with `pkg-config --cflags --libs cmesh`
# and as a CMake project using find_package(cmesh REQUIRED) (which also
# links cmesh::cmesh_static); then builds examples/ both ways and runs
# examples/run.sh on each build. LIBDIR is CMAKE_INSTALL_LIBDIR (default lib).
# Environment: CC (compiler), CMAKE and PKG_CONFIG (tools to use),
# CMESH_CONSUMER_FLAGS (extra compile and link flags, e.g. the sanitizer
# flags the library was built with).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: $0 BUILD_DIR [LIBDIR]" >&2
	exit 2
fi
build=$(cd "$1" && pwd)
libdir_rel=${2:-lib}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=${CC:-cc}
cmake=${CMAKE:-cmake}
pkg_config=${PKG_CONFIG:-pkg-config}
read -r -a flags <<<"${CMESH_CONSUMER_FLAGS:-}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cmesh-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
if [[ $libdir_rel = /* ]]; then
	echo "absolute CMAKE_INSTALL_LIBDIR ($libdir_rel): cannot relocate" >&2
	exit 1
fi
libdir=$prefix/$libdir_rel

echo "== cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
	{ cat "$tmp/install.log"; exit 1; }

for f in "$prefix/include/cmesh.h" "$libdir/libcmesh.a" \
	"$libdir/pkgconfig/cmesh.pc" "$libdir/cmake/cmesh/cmeshConfig.cmake"; do
	[[ -e $f ]] || { echo "missing after install: $f" >&2; exit 1; }
done
# Only public headers are installed.
extra=$(find "$prefix/include" -type f ! -path "$prefix/include/cmesh.h" \
	! -path "$prefix/include/cmesh/*.h")
if [[ -n $extra ]]; then
	echo "unexpected files installed under include/: $extra" >&2
	exit 1
fi

echo "== pkg-config consumer"
export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
pc_cflags=$("$pkg_config" --cflags cmesh)
pc_libs=$("$pkg_config" --libs cmesh)
echo "cflags: $pc_cflags"
echo "libs:   $pc_libs"
# shellcheck disable=SC2086 # word splitting of pkg-config output is wanted
"$cc" -std=c11 -Wall -Wextra -Werror "${flags[@]}" $pc_cflags \
	"$here/consumer/main.c" -o "$tmp/consumer-pc" $pc_libs
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
	"$tmp/consumer-pc"

# The private dependencies (liburing, libxxhash, ck) are named as plain
# flags for a static link, never as packages pkg-config must find: a
# shared consumer needs none of their development files. Shown with a
# search path that holds cmesh.pc alone.
echo "== pkg-config without the private dependencies' .pc files"
alone_libs=$(PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_PATH= \
	"$pkg_config" --cflags --libs cmesh)
static_libs=$(PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_PATH= \
	"$pkg_config" --static --libs cmesh)
echo "libs: $alone_libs; static: $static_libs"
for l in -luring -lxxhash -lck; do
	[[ " $static_libs " == *" $l "* ]] ||
		{ echo "pkg-config --static --libs cmesh lacks $l" >&2; exit 1; }
	[[ " $alone_libs " != *" $l "* ]] ||
		{ echo "pkg-config --libs cmesh names $l (private)" >&2; exit 1; }
done

# Configures project SRC in $tmp/NAME against the installed prefix (more
# cmake arguments after SRC) and builds it; on failure prints the log.
cmake_project() {
	local name=$1 src=$2
	shift 2
	"$cmake" -S "$src" -B "$tmp/$name" -DCMAKE_PREFIX_PATH="$prefix" \
		-DCMAKE_C_COMPILER="$cc" \
		-DCMAKE_C_FLAGS="${CMESH_CONSUMER_FLAGS:-}" \
		-DCMAKE_EXE_LINKER_FLAGS="${CMESH_CONSUMER_FLAGS:-}" "$@" \
		>"$tmp/$name-configure.log" 2>&1 ||
		{ cat "$tmp/$name-configure.log"; exit 1; }
	"$cmake" --build "$tmp/$name" >"$tmp/$name-build.log" 2>&1 ||
		{ cat "$tmp/$name-build.log"; exit 1; }
}

echo "== CMake consumer (find_package)"
cmake_project consumer "$here/consumer"
"$tmp/consumer/consumer"
"$tmp/consumer/consumer_static"

# The same without liburing's, libxxhash's and ck's development files:
# pkg-config finds no .pc of theirs, find_path/find_library none of their
# headers or libraries. find_package(cmesh) must still succeed for the
# shared library.
echo "== CMake consumer of the shared library, private dependencies hidden"
empty=$tmp/empty-pc
mkdir -p "$empty"
multiarch=$("$cc" -print-multiarch 2>/dev/null || true)
ignore="/usr/include;/usr/lib;/usr/local/include;/usr/local/lib"
[[ -n $multiarch ]] && ignore="$ignore;/usr/lib/$multiarch"
PKG_CONFIG_LIBDIR=$empty PKG_CONFIG_PATH= cmake_project consumer-shared \
	"$here/consumer" -DSHARED_ONLY=ON -DCMAKE_IGNORE_PATH="$ignore"
grep -q "cmesh::cmesh_static" "$tmp/consumer-shared-configure.log" ||
	{ cat "$tmp/consumer-shared-configure.log";
	  echo "the dependencies were not hidden" >&2; exit 1; }
"$tmp/consumer-shared/consumer"

examples=$here/../../examples
echo "== examples (find_package)"
cmake_project examples "$examples"
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
	"$examples/run.sh" "$tmp/examples"

echo "== examples (pkg-config)"
mkdir -p "$tmp/examples-pc"
for ex in vmm device listener config; do
	# shellcheck disable=SC2086 # word splitting of pkg-config output
	"$cc" -std=c11 -Wall -Wextra -Werror "${flags[@]}" $pc_cflags \
		"$examples/$ex.c" -o "$tmp/examples-pc/$ex" $pc_libs
done
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
	"$examples/run.sh" "$tmp/examples-pc"

echo "install test passed"
