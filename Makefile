# The two commands a reader needs: `make book` and `make test`. Both create the local
# virtual environment .venv on first use (and refresh it when lib/pyproject.toml or the book
# toolchain's pins, lib/constraints-book.txt, change).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := lib/constraints-book.txt
PROFILE ?= auto
CHAPTERS ?=
JOBS ?=
FORCE ?=
# EXECUTOR=slurm: chapters as SLURM jobs (README, On a cluster; options from $ADVBOOK_SLURM_*)
EXECUTOR ?=
# Models and datasets live in .cache/advbook and .cache/data of this checkout for every way of
# running (make, advbook run, plain papermill): the library finds the checkout itself
# (advbook.paths); exported ADVBOOK_CACHE / ADVBOOK_DATA override. Used here by clean-cache only.
ADVBOOK_CACHE ?= $(CURDIR)/.cache/advbook
# the full profile needs CIFAR-10 / MNIST: `make book` may download them (the library alone never does)
export ADVBOOK_DOWNLOAD ?= 1

.PHONY: book test bench calibrate-autoattack site check-site strip student clean clean-cache cache-pack cache-unpack teaching-times help

help:
	@echo "make book    run every chapter (profile: auto = full with CUDA, else quick) and render _build/html"
	@echo "make test    the fast tests + one chapter executed with tiny parameters (the slow rest: .ci/run)"
	@echo "make bench   print training / attack throughput figures (and write book/results/bench.json)"
	@echo "make calibrate-autoattack  re-measure the quick AutoAttack budget (book/measurements/, slow on CPU)"
	@echo "make site    render the site from the chapters already executed"
	@echo "make check-site  open _build/html in headless Chromium: pages, math, images, links; screenshots in _build/screenshots"
	@echo "make strip   remove outputs from the source notebooks and write their parameters cells from the declarations"
	@echo "make cache-pack  the chapters' reference models at PROFILE (ALL=1: every cache entry) as a tarball for a class"
	@echo "make cache-unpack FILE=...  import such a tarball into .cache/advbook (checked first; refuses a bad one)"
	@echo "make teaching-times  regenerate the measured reading and compute times on book/teaching.md"
	@echo "make student the student edition in student/: no outputs, verdicts or solutions; exercises as cells to fill"
	@echo "variables: PROFILE=quick|full|tiny  CHAPTERS='00 03'  JOBS=2  FORCE=1 (re-execute up-to-date chapters)  EXECUTOR=slurm"

$(STAMP): lib/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e "lib[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/advbook run $(CHAPTERS) --profile $(PROFILE)$(if $(JOBS), --jobs $(JOBS))$(if $(FORCE), --force)$(if $(EXECUTOR), --executor $(EXECUTOR))

site: $(STAMP)
	$(BIN)/advbook build

# installs Debian's chromium with apt-get when it is missing (as root); see advbook/book/sitecheck.py
check-site: $(STAMP)
	$(BIN)/python -m advbook.book.sitecheck _build/html --screenshots _build/screenshots

# the fast suite plus one chapter executed in tiny (tests marked slow, pytest.ini, are left to CI: .ci/run)
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 tests

bench: $(STAMP)
	$(BIN)/python -m advbook.tools.bench

calibrate-autoattack: $(STAMP)
	$(BIN)/python -m advbook.calibration

strip: $(STAMP)
	$(BIN)/python -m advbook.book.notebooks_strip notebooks/*.ipynb

# Share a warmed cache with a class (book/teaching.md): `make cache-pack` writes the reference models the
# chapters declare at PROFILE (ALL=1: every intact entry) to advbook-cache-<profile>-reference.tar.gz
# (CACHE_FILE=... to name it), with a SHA-256 manifest; `make cache-unpack FILE=...` checks a tarball
# (paths, links, checksums, keys) before it writes anything, then adds its entries (advbook.book.cachepack).
CACHE_FILE ?=
ALL ?=
cache-pack: $(STAMP)
	$(BIN)/advbook cache pack --profile $(PROFILE)$(if $(ALL), --all)$(if $(CACHE_FILE), -o $(CACHE_FILE))

cache-unpack: $(STAMP)
	@test -n "$(FILE)" || { echo "usage: make cache-unpack FILE=advbook-cache-quick-reference.tar.gz"; exit 2; }
	$(BIN)/advbook cache import $(FILE)

# the generated table of book/teaching.md (advbook.book.teaching): recorded runs, this build's results, cache manifests
teaching-times: $(STAMP)
	$(BIN)/python -m advbook.book.teaching

# the student edition (advbook.book.student): each chapter without outputs, verdicts or solutions, its exercises as
# cells to fill with nbgrader-compatible assertion cells, in student/ (CHAPTERS='00 03' for some)
student: $(STAMP)
	$(BIN)/python -m advbook.book.student --out student/ $(CHAPTERS)

clean:
	rm -rf _build book/chapters book/results book/reproducibility.md

clean-cache:
	rm -rf $(ADVBOOK_CACHE)
