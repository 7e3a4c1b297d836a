#!/bin/sh
# Build llama.cpp's command-line tools that GGUF export and its tests run (quantize, perplexity, imatrix,
# tokenize) from the llama.cpp source vendored in llama-cpp-python's source distribution on the package index.
# It also extracts llama.cpp's own Hugging Face -> GGUF converter (convert_hf_to_gguf.py, its conversion/ package
# and the gguf-py it imports, which matches the converter's version) into DEST/convert: core/io/gguf_convert.py
# runs it for the model families our own GGUF writer does not cover (Gemma, Qwen3, Mistral, Phi-3, ...).
# Usage: packaging/build_llama_cpp.sh PYTHON DEST   (DEST/bin receives the tools; skipped when already built)
set -eu
PY=$1
DEST=$2
VERSION=0.3.36
TOOLS="llama-quantize llama-perplexity llama-imatrix llama-tokenize"
STAMP="$DEST/bin/.built-$VERSION-logflush"  # the suffix names the patch below: older builds are rebuilt
CONVERT_STAMP="$DEST/convert/.extracted-$VERSION"
SDIST="$DEST/src/llama_cpp_python-$VERSION.tar.gz"
[ -f "$STAMP" ] && [ -f "$CONVERT_STAMP" ] && exit 0
mkdir -p "$DEST/src" "$DEST/bin"
# pip's own HTTP cache keeps the tar.gz, so a rebuild does not download it again.
[ -f "$SDIST" ] || "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
	"llama-cpp-python==$VERSION" -d "$DEST/src"
if [ ! -f "$CONVERT_STAMP" ]; then
	rm -rf "$DEST/convert" "$DEST/convert.partial"
	mkdir -p "$DEST/convert.partial"
	V="llama_cpp_python-$VERSION/vendor/llama.cpp"
	tar -xzf "$SDIST" -C "$DEST/convert.partial" --strip-components=3 \
		"$V/convert_hf_to_gguf.py" "$V/conversion" "$V/gguf-py/gguf" "$V/LICENSE"
	touch "$DEST/convert.partial/.extracted-$VERSION"
	mv "$DEST/convert.partial" "$DEST/convert"
fi
[ -f "$STAMP" ] && exit 0
rm -rf "$DEST/src/llama_cpp_python-$VERSION"
tar -xzf "$SDIST" -C "$DEST/src" "llama_cpp_python-$VERSION/vendor/llama.cpp"
SRC="$DEST/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
# llama.cpp leaks its logger on purpose (its log.cpp cites ggml-org/llama.cpp#22142), so the logger's thread can
# lose the last lines at exit: llama-perplexity's final value went missing on busy cores, four runs in a row.
# One line flushes the queue at exit on this platform (a pause joins the logger's thread).
sed -i 's|^        log = new common_log;$|        log = new common_log;\n        std::atexit([]() { common_log_pause(log); });|' \
	"$SRC/common/log.cpp"
grep -q "std::atexit(\[\]() { common_log_pause(log); });" "$SRC/common/log.cpp"
cmake -S "$SRC" -B "$DEST/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
	-DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_BUILD_TOOLS=ON >"$DEST/cmake.log"
nice -n 10 cmake --build "$DEST/build" -j2 --target $TOOLS
for t in $TOOLS; do cp "$DEST/build/bin/$t" "$DEST/bin/$t"; done
# the tools are linked statically: the build tree and the unpacked source (about 340 MB) are no longer needed
rm -rf "$DEST/build" "$DEST/src/llama_cpp_python-$VERSION"
touch "$STAMP"
