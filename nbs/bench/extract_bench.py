"""Scale benchmark of the MIMIC-IV event extraction (issue 4, item 3). Not run by the tests.

Writes a synthetic `chartevents.csv` in the exact MIMIC-IV 2.2 layout (11 columns, real item ids, ~45 % of rows
on the 17 variables' items, the rest on other items; about 6 000 rows per subject as in MIMIC-IV) plus the
patients/admissions/icustays/labevents it needs, then measures, in the same run and each in a fresh subprocess:

* ours: `ddl_cxr.mimic.extract_events` (DuckDB scan with the item filter pushed down, a second pass counting every
  item id, cleaning, assignment, de-duplication, one parquet);
* baseline: the reference pipeline's shape in pandas — read the whole table, keep the mapped items of cohort
  subjects, split by subject and write `{subject}/events.csv`, re-read every subject file, validate, map items,
  clean, cut each stay's episode and write `episode{stay}_timeseries.csv` (mimic4extract steps 1–3).

It prints rows/s and peak RSS (from wait4, whole child process) of both, and the throughput ratio, for every input
size: once over the wall time of the child (interpreter start and imports included; `ddl_cxr.core` imports torch,
about 0.7 GB and a few seconds, paid by both) and once over the work alone.

    python nbs/bench/extract_bench.py --sizes 4000000 20000000 --threads 2 --out results.json
"""
import argparse, json, os, resource, subprocess, sys, time, shutil
from pathlib import Path

HERE = Path(__file__).resolve()

# --------------------------------------------------------------------------------------------- the two methods
def run_ours(mimic:Path, work:Path, threads:int, memory_limit:str):
    from ddl_cxr.mimic import extract_stays, extract_events
    stays, _ = extract_stays(mimic)
    rep = extract_events(mimic, stays, work/'events.parquet', tables=['chartevents'], threads=threads,
                         memory_limit=memory_limit, tmpdir=work)
    return dict(rows_in=rep['tables'][0]['rows_scanned'], rows_out=rep['rows_written'])

def run_baseline(mimic:Path, work:Path):
    "The reference pipeline's shape (mimic4extract steps 1-3) in plain pandas, one subject folder at a time"
    import numpy as np, pandas as pd
    from ddl_cxr.mimic import load_item_map, find_table
    imap = load_item_map(); imap = imap[imap.linksto == 'chartevents']
    stays = pd.read_csv(find_table(mimic, 'icustays'), parse_dates=['intime', 'outtime'])
    # step 1: read everything, keep mapped items of cohort subjects, split by subject, write per-subject CSVs
    ce = pd.read_csv(find_table(mimic, 'chartevents'), dtype=str, keep_default_na=False)
    n_in = len(ce)
    ce = ce[ce.itemid.astype('int64').isin(set(imap.itemid)) & ce.subject_id.astype('int64').isin(set(stays.subject_id))]
    cols = ['subject_id', 'hadm_id', 'stay_id', 'charttime', 'itemid', 'value', 'valuenum', 'valueuom']
    root = work/'subjects'
    for sid, g in ce[cols].groupby('subject_id', sort=False):
        d = root/str(sid); d.mkdir(parents=True, exist_ok=True)
        g.to_csv(d/'events.csv', index=False)
    del ce
    # steps 2-3: re-read each subject, validate, map, clean, cut episodes, write time series
    st_by_subject = {k: g for k, g in stays.groupby('subject_id')}
    vmap = dict(zip(imap.itemid, imap.variable)); n_out = 0
    for d in sorted(root.iterdir()):
        ev = pd.read_csv(d/'events.csv', parse_dates=['charttime'])
        sst = st_by_subject[int(d.name)]
        ev = ev[ev.hadm_id.notna() & ev.hadm_id.isin(sst.hadm_id)]
        hs = dict(zip(sst.hadm_id, sst.stay_id))
        ev['stay_id'] = ev.stay_id.fillna(ev.hadm_id.map(hs))
        ev = ev[ev.stay_id == ev.hadm_id.map(hs)]
        ev['variable'] = ev.itemid.map(vmap)
        num = pd.to_numeric(ev.value, errors='coerce')
        temp = ev.variable == 'Temperature'
        num[temp & (num >= 79)] = (num[temp & (num >= 79)] - 32) * 5 / 9
        ev['VALUE'] = np.where(num.notna(), num.astype(str), ev.value.astype(str))
        ev = ev[ev.VALUE.notna()]
        for s in sst.itertuples():
            e = ev[(ev.stay_id == s.stay_id) | ((ev.charttime >= s.intime) & (ev.charttime <= s.outtime))]
            ts = (e.sort_values(['charttime', 'variable', 'VALUE']).drop_duplicates(['charttime', 'variable'], keep='last')
                   .pivot(index='charttime', columns='variable', values='VALUE').sort_index().reset_index())
            ts.insert(0, 'Hours', (ts.charttime - s.intime) / pd.Timedelta(hours=1))
            ts.drop(columns='charttime').to_csv(d/f'episode{s.stay_id}_timeseries.csv', index=False)
            n_out += len(ts)
    return dict(rows_in=n_in, rows_out=n_out)

# --------------------------------------------------------------------------------------------- harness
def measure(method:str, mimic:Path, work:Path, threads:int, memory_limit:str):
    "Run one method in a fresh subprocess; wall seconds and peak RSS (MiB) of that process"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    p = subprocess.Popen([sys.executable, str(HERE), '--run', method, '--mimic', str(mimic), '--work', str(work),
                          '--threads', str(threads), '--memory-limit', memory_limit], env=env, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.time() - t0
    if status != 0: raise RuntimeError(f"{method} failed (status {status}):\n{out}")
    res = json.loads(out.strip().splitlines()[-1])
    return dict(method=method, seconds=round(secs, 2), peak_rss_mib=round(ru.ru_maxrss / 1024, 1),
                rows_per_s=round(res['rows_in'] / secs), work_rows_per_s=round(res['rows_in'] / max(res['work_s'], 1e-9)), **res)

def main():
    from ddl_cxr.mimic import write_synthetic_mimic
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=[4_000_000, 20_000_000])
    ap.add_argument('--workdir', default=None, help='scratch folder (default: a new temp folder, removed at the end)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--memory-limit', default='1GB', help='DuckDB memory limit for ours')
    ap.add_argument('--gzip', action='store_true', help='write chartevents.csv.gz as MIMIC ships it')
    ap.add_argument('--skip-baseline', action='store_true')
    ap.add_argument('--out', default=None, help='write the results as JSON here')
    ap.add_argument('--run', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--mimic', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--work', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:   # child process: imports first, then the timed work
        import numpy, pandas, duckdb, ddl_cxr.mimic
        t0 = time.time()
        r = (run_ours(Path(a.mimic), Path(a.work), a.threads, a.memory_limit) if a.run == 'ours'
             else run_baseline(Path(a.mimic), Path(a.work)))
        r['work_s'] = round(time.time() - t0, 2)
        print(json.dumps(r)); return
    import tempfile
    wd = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix='ddl_bench_'))
    results = []
    print(f"load average at start {os.getloadavg()}, {os.cpu_count()} cores, threads={a.threads}, "
          f"DuckDB memory_limit={a.memory_limit}, {'gzip' if a.gzip else 'plain'} CSV", flush=True)
    try:
        for n in a.sizes:
            mimic = wd/f'mimic_{n}'
            t0 = time.time(); write_synthetic_mimic(mimic, n, gz=a.gzip, threads=a.threads)
            size = (mimic/'icu'/('chartevents.csv.gz' if a.gzip else 'chartevents.csv')).stat().st_size
            print(f"[{n:,} rows] wrote chartevents ({size/2**20:.0f} MiB) in {time.time()-t0:.1f} s", flush=True)
            row = dict(rows=n, file_mib=round(size / 2**20))
            row['ours'] = measure('ours', mimic, wd/f'ours_{n}', a.threads, a.memory_limit)
            o = row['ours']
            print(f"  ours     {o['seconds']:8.1f} s  {o['rows_per_s']:>10,} rows/s  (work {o['work_s']:.1f} s, {o['work_rows_per_s']:>10,} rows/s)  peak {o['peak_rss_mib']:8.0f} MiB", flush=True)
            if not a.skip_baseline:
                try: row['baseline'] = measure('baseline', mimic, wd/f'base_{n}', a.threads, a.memory_limit)
                except RuntimeError as e:
                    print(f"  baseline FAILED: {str(e)[:300]}", flush=True); row['baseline'] = {'error': str(e)[:1000]}
                    for d in (wd/f'ours_{n}', wd/f'base_{n}', mimic): shutil.rmtree(d, ignore_errors=True)
                    results.append(row); continue
                b = row['baseline']
                print(f"  baseline {b['seconds']:8.1f} s  {b['rows_per_s']:>10,} rows/s  (work {b['work_s']:.1f} s, {b['work_rows_per_s']:>10,} rows/s)  peak {b['peak_rss_mib']:8.0f} MiB", flush=True)
                row['ratio'] = round(o['rows_per_s'] / b['rows_per_s'], 1)
                row['ratio_work'] = round(o['work_rows_per_s'] / b['work_rows_per_s'], 1)
                print(f"  throughput ratio ours/baseline: {row['ratio']}x wall (process start and imports included), "
                      f"{row['ratio_work']}x work only", flush=True)
            shutil.rmtree(wd/f'ours_{n}', ignore_errors=True); shutil.rmtree(wd/f'base_{n}', ignore_errors=True)
            shutil.rmtree(mimic, ignore_errors=True)
            row['load_avg_after'] = os.getloadavg()
            results.append(row)
    finally:
        if not a.workdir: shutil.rmtree(wd, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(results, indent=1))

if __name__ == '__main__':
    main()
