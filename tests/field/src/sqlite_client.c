/* sqlite_client: a program using SQLite (the Debian library) for small write transactions.
 * One thread, 1 ms of think time between transactions; a transaction inserts rows
 * (insert_rows: BEGIN and 10 INSERTs of 100 bytes) and commits (commit_txn: COMMIT, which
 * syncs the write-ahead log to disk when synchronous=FULL).
 *
 *   sqlite_client --seconds S --dir DIR [--synchronous FULL|NORMAL|OFF]
 * Knobs: FIELD_SCALE_insert_rows (number of rows). */
#include "field.h"
#include <sqlite3.h>

static double s_insert;
static sqlite3 *db;
static sqlite3_stmt *ins;

static void check(int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "sqlite_client: %s: %s\n", what, sqlite3_errmsg(db));
        exit(2);
    }
}

__attribute__((noinline)) void insert_rows(long *seq)
{
    check(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), "BEGIN");
    char payload[101];
    int rows = (int)(10 * s_insert + 0.5);
    for (int i = 0; i < rows; i++) {
        snprintf(payload, sizeof payload, "%0100ld", ++*seq);
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, *seq);
        sqlite3_bind_text(ins, 2, payload, 100, SQLITE_TRANSIENT);
        check(sqlite3_step(ins), "INSERT");
    }
}

__attribute__((noinline)) void commit_txn(void)
{
    check(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "COMMIT");
}

int main(int argc, char **argv)
{
    field_start("sqlite_client", argc, argv);
    field_exit_on_term();
    s_insert = field_scale("insert_rows");
    const char *dir = arg_string(argc, argv, "--dir", "/tmp/critpath-field-sqlite_sync");
    const char *sync = arg_string(argc, argv, "--synchronous", "FULL");
    field_mkdir(dir);
    field_remove_later(dir);
    char path[512], sql[600];
    snprintf(path, sizeof path, "%s/bench-%d.db", dir, (int)getpid());
    field_remove_later(path);
    snprintf(sql, sizeof sql, "%s-wal", path);
    field_remove_later(sql);
    snprintf(sql, sizeof sql, "%s-shm", path);
    field_remove_later(sql);
    check(sqlite3_open(path, &db), "open");
    check(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), "journal_mode");
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
    check(sqlite3_exec(db, sql, NULL, NULL, NULL), "synchronous");
    check(sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)", NULL, NULL,
                       NULL),
          "CREATE");
    check(sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?, ?)", -1, &ins, NULL), "prepare");
    long seq = 0;
    while (field_running()) {
        sleep_us(1000); /* think time */
        double t = now_us();
        insert_rows(&seq);
        commit_txn();
        field_record(t, now_us());
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
    field_report();
    return 0;
}
