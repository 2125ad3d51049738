"""Scale benchmark of the MIMIC-IV event extraction (issue 4, item 3). Not run by the tests.

Writes a synthetic `chartevents.csv` in the exact MIMIC-IV 2.2 layout (11 columns, real item ids, ~45 % of rows
on the 17 variables' items, the rest on other items; about 6 000 rows per subject as in MIMIC-IV) plus the
patients/admissions/icustays/labevents it needs, then measures, in the same run and each in a fresh subprocess:

* ours: `ddl_cxr.mimic.extract_events` (DuckDB scan with the item filter on the reader's output, a byte-level row
  count beside it so that every row is accounted for, cleaning, assignment, de-duplication, one parquet);
* reference: the reference pipeline's shape (mimic4extract steps 1–3). Step 1 exactly as its
  `read_events_table_and_break_up_by_subject`: a csv.DictReader row by row, subject and item filters on strings,
  rows appended to `{subject}/events.csv` with a csv.DictWriter; steps 2–3 in pandas: re-read every subject file,
  validate, map items, clean, cut each stay's episode and write `episode{stay}_timeseries.csv` (our steps 2–3 clean
  less than the reference's `clean_events`, so this baseline is, if anything, faster than the real one);
* pandas: the same, with step 1 vectorised (one `pd.read_csv` of the whole table, a boolean filter, a groupby
  writing the subject files). A stronger baseline than the reference code, reported alongside.

It prints rows/s and peak RSS (from wait4, whole child process) of each, and the throughput ratios, for every input
size: once over the wall time of the child (interpreter start and imports included:
numpy, pandas and duckdb for every method) and once over the work alone.

    python nbs/bench/extract_bench.py --sizes 4000000 20000000 --threads 2 --out results.json
"""
import argparse, json, os, resource, subprocess, sys, time, shutil
from pathlib import Path

HERE = Path(__file__).resolve()

# --------------------------------------------------------------------------------------------- the three methods
def run_ours(mimic:Path, work:Path, threads:int, memory_limit:str):
    from ddl_cxr.mimic import extract_stays, extract_events
    stays, _ = extract_stays(mimic)
    rep = extract_events(mimic, stays, work/'events.parquet', tables=['chartevents'], threads=threads,
                         memory_limit=memory_limit, tmpdir=work)
    return dict(rows_in=rep['tables'][0]['rows_scanned'], rows_out=rep['rows_written'])

def _split_by_subject_pandas(mimic:Path, root:Path, item_ids:set, subject_ids:set)->int:
    "Step 1, vectorised: read the whole table with pandas, keep mapped items of cohort subjects, one CSV per subject"
    import pandas as pd
    from ddl_cxr.mimic import find_table
    ce = pd.read_csv(find_table(mimic, 'chartevents'), dtype=str, keep_default_na=False)
    n_in = len(ce)
    ce = ce[ce.itemid.astype('int64').isin(item_ids) & ce.subject_id.astype('int64').isin(subject_ids)]
    for sid, g in ce[OBS_HEADER].groupby('subject_id', sort=False):
        d = root/str(sid); d.mkdir(parents=True, exist_ok=True)
        g.to_csv(d/'events.csv', index=False)
    return n_in

def _split_by_subject_rowwise(mimic:Path, root:Path, item_ids:set, subject_ids:set)->int:
    """Step 1 as the reference code does it (mimic3csv.read_events_table_and_break_up_by_subject): a csv.DictReader
    over the table, string sets of subjects and items, the rows of the current subject buffered and appended to
    `{subject}/events.csv` with a csv.DictWriter whenever the subject changes. Streams: memory stays flat."""
    import csv
    from ddl_cxr.mimic import find_table
    items, subjects = {str(i) for i in item_ids}, {str(s) for s in subject_ids}
    cur, obs, n_in = '', [], 0
    def flush():
        d = root/cur; d.mkdir(parents=True, exist_ok=True); fn = d/'events.csv'
        new = not fn.exists()
        with open(fn, 'a', newline='') as f:
            if new: f.write(','.join(OBS_HEADER) + '\n')
            csv.DictWriter(f, fieldnames=OBS_HEADER, quoting=csv.QUOTE_MINIMAL).writerows(obs)
    with open(find_table(mimic, 'chartevents'), newline='') as f:
        for row in csv.DictReader(f):
            n_in += 1
            if row['subject_id'] not in subjects or row['itemid'] not in items: continue
            if cur and cur != row['subject_id']: flush(); obs = []
            obs.append({k: row.get(k, '') for k in OBS_HEADER}); cur = row['subject_id']
    if cur: flush()
    return n_in

OBS_HEADER = ['subject_id', 'hadm_id', 'stay_id', 'charttime', 'itemid', 'value', 'valuenum', 'valueuom']

def _validated(ev, sst, key=lambda col: col):
    "validate_events' rules: drop rows without a cohort hadm_id, fill a missing stay_id from it, drop disagreeing ones"
    hs = dict(zip(key(sst.hadm_id), key(sst.stay_id)))
    ev = ev[ev.hadm_id.notna() & ev.hadm_id.isin(list(hs))]
    ev['stay_id'] = ev.stay_id.fillna(ev.hadm_id.map(hs))
    return ev[ev.stay_id == ev.hadm_id.map(hs)]

def _validate_subject(d:Path, sst)->None:
    "Step 2 as the reference's validate_events: read the subject's events as text, validate, rewrite the file"
    import pandas as pd
    _validated(pd.read_csv(d/'events.csv', dtype=str), sst, key=lambda col: col.astype(str)).to_csv(d/'events.csv', index=False)

def _clean_reference(ev):
    "clean_events the reference's way: one function per variable, text handled value by value with `apply`"
    import re, numpy as np, pandas as pd
    def bp(part):
        def f(df):
            v = df.value.astype(str); idx = v.apply(lambda x: '/' in x)
            v.loc[idx] = v[idx].apply(lambda x: re.match(r'^(\d+)/(\d+)$', x).group(part) if re.match(r'^(\d+)/(\d+)$', x) else np.nan)
            return v.astype(float)
        return f
    def crr(df):
        m = {'Normal <3 secs': 0.0, 'Brisk': 0.0, 'Abnormal >3 secs': 1.0, 'Delayed': 1.0}
        return df.value.apply(lambda x: m.get(x, np.nan))
    def fio2(df):
        v = df.value.astype(float).copy(); torr = df.valueuom.fillna('').apply(lambda u: 'torr' in u.lower())
        v[~torr] = v[~torr] / 100.0; return v
    def lab(df):
        v = df.value.astype(str).copy(); bad = v.apply(lambda x: re.match(r'^(\d+(\.\d*)?|\.\d+)$', x) is None)
        v.loc[bad] = np.nan; return v.astype(float)
    def o2(df):
        v = lab(df); v[v <= 1] = v[v <= 1] * 100; return v
    def temp(df):
        v = df.value.astype(float).copy(); f = df.valueuom.fillna('').apply(lambda u: 'F' in u) | (v >= 79)
        v[f] = (v[f] - 32) * 5.0 / 9; return v
    def weight(df):
        v = df.value.astype(float).copy(); u = df.valueuom.fillna('')
        oz = u.apply(lambda x: 'oz' in x.lower()); lb = u.apply(lambda x: 'lb' in x.lower())
        v[oz] = v[oz] / 16.0 * 0.453592; v[lb] = v[lb] * 0.453592; return v
    def height(df):
        v = df.value.astype(float).copy(); inch = df.valueuom.fillna('').apply(lambda x: 'in' in x.lower())
        v[inch] = np.round(v[inch] * 2.54); return v
    fns = {'Diastolic blood pressure': bp(2), 'Systolic blood pressure': bp(1), 'Capillary refill rate': crr,
           'Fraction inspired oxygen': fio2, 'Oxygen saturation': o2, 'Glucose': lab, 'pH': lab,
           'Temperature': temp, 'Weight': weight, 'Height': height}
    ev = ev.copy(); ev['VALUE'] = ev.value.astype(object)
    for var, fn in fns.items():
        idx = ev.variable == var
        if idx.any():
            try: ev.loc[idx, 'VALUE'] = fn(ev[idx])
            except (ValueError, TypeError): ev.loc[idx, 'VALUE'] = pd.to_numeric(ev[idx].value, errors='coerce')
    return ev[ev.VALUE.notna()]

def _episodes(root:Path, stays, imap, reference:bool)->int:
    """Steps 2-3: re-read each subject's events, validate, map items, clean, cut each stay's episode, write its time
    series. `reference`: step 2 rewrites the validated file and step 3 re-reads it and cleans as clean_events does."""
    import numpy as np, pandas as pd
    st_by_subject = {k: g for k, g in stays.groupby('subject_id')}
    vmap = dict(zip(imap.itemid, imap.variable)); n_out = 0
    for d in sorted(root.iterdir()):
        sst = st_by_subject[int(d.name)]
        if reference:
            _validate_subject(d, sst)
            ev = pd.read_csv(d/'events.csv', parse_dates=['charttime'])
            ev = ev.merge(imap[['itemid', 'variable']], on='itemid', how='inner')
            ev = _clean_reference(ev)
        else:
            ev = _validated(pd.read_csv(d/'events.csv', parse_dates=['charttime']), sst)
            ev['variable'] = ev.itemid.map(vmap)
            num = pd.to_numeric(ev.value, errors='coerce')
            temp = ev.variable == 'Temperature'
            num[temp & (num >= 79)] = (num[temp & (num >= 79)] - 32) * 5 / 9
            ev['VALUE'] = np.where(num.notna(), num.astype(str), ev.value.astype(str))
            ev = ev[ev.VALUE.notna()]
        for s in sst.itertuples():
            e = ev[(ev.stay_id == s.stay_id) | ((ev.charttime >= s.intime) & (ev.charttime <= s.outtime))]
            ts = (e.sort_values(['charttime', 'variable']).drop_duplicates(['charttime', 'variable'], keep='last')
                   .pivot(index='charttime', columns='variable', values='VALUE').sort_index().reset_index())
            ts.insert(0, 'Hours', (ts.charttime - s.intime) / pd.Timedelta(hours=1))
            ts.drop(columns='charttime').to_csv(d/f'episode{s.stay_id}_timeseries.csv', index=False)
            n_out += len(ts)
    return n_out

def run_baseline(mimic:Path, work:Path, reference:bool):
    "The reference pipeline's shape (mimic4extract steps 1-3), one subject folder at a time"
    import pandas as pd
    from ddl_cxr.mimic import load_item_map, find_table
    imap = load_item_map(); imap = imap[imap.linksto == 'chartevents']
    stays = pd.read_csv(find_table(mimic, 'icustays'), parse_dates=['intime', 'outtime'])
    root = work/'subjects'
    split = _split_by_subject_rowwise if reference else _split_by_subject_pandas
    t0 = time.time()
    n_in = split(mimic, root, set(imap.itemid), set(stays.subject_id))
    t1 = time.time(); n_out = _episodes(root, stays, imap, reference)
    return dict(rows_in=n_in, rows_out=n_out, step1_s=round(t1 - t0, 2), steps23_s=round(time.time() - t1, 2))

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

BASELINES = ('reference', 'pandas')

def _line(name, r):
    return (f"  {name:9s} {r['seconds']:8.1f} s  {r['rows_per_s']:>10,} rows/s  (work {r['work_s']:.1f} s, "
            f"{r['work_rows_per_s']:>10,} rows/s)  peak {r['peak_rss_mib']:8.0f} MiB"
            + (f"  [step 1 {r['step1_s']:.1f} s, steps 2-3 {r['steps23_s']:.1f} s]" if 'step1_s' in r else ''))

def main():
    from ddl_cxr.mimic import write_synthetic_mimic
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=[4_000_000, 20_000_000])
    ap.add_argument('--baselines', nargs='*', default=list(BASELINES), choices=BASELINES,
                    help='reference: step 1 row by row as the reference code; pandas: step 1 vectorised (stronger)')
    ap.add_argument('--workdir', default=None, help='scratch folder (default: a new temp folder, removed at the end)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--memory-limit', default='1GB', help='DuckDB memory limit for ours')
    ap.add_argument('--gzip', action='store_true', help='write chartevents.csv.gz as MIMIC ships it')
    ap.add_argument('--out', default=None, help='write the results as JSON here')
    ap.add_argument('--run', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--mimic', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--work', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:   # child process: imports first, then the timed work
        import numpy, pandas, duckdb, ddl_cxr.mimic
        t0 = time.time()
        r = (run_ours(Path(a.mimic), Path(a.work), a.threads, a.memory_limit) if a.run == 'ours'
             else run_baseline(Path(a.mimic), Path(a.work), reference=a.run == 'reference'))
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
            for method in ['ours', *a.baselines]:
                try: row[method] = r = measure(method, mimic, wd/f'{method}_{n}', a.threads, a.memory_limit)
                except RuntimeError as e:
                    print(f"  {method} FAILED: {str(e)[:300]}", flush=True); row[method] = {'error': str(e)[:1000]}; continue
                finally: shutil.rmtree(wd/f'{method}_{n}', ignore_errors=True)
                print(_line(method, r), flush=True)
            o = row['ours']
            for bname in a.baselines:
                b = row[bname]
                if 'error' in b or 'error' in o: continue
                row[f'ratio_{bname}'] = round(o['rows_per_s'] / b['rows_per_s'], 1)
                row[f'ratio_{bname}_work'] = round(o['work_rows_per_s'] / b['work_rows_per_s'], 1)
                print(f"  throughput ours/{bname}: {row[f'ratio_{bname}']}x wall (process start and imports included), "
                      f"{row[f'ratio_{bname}_work']}x work only; peak RSS {o['peak_rss_mib']:.0f} vs {b['peak_rss_mib']:.0f} MiB", flush=True)
            shutil.rmtree(mimic, ignore_errors=True)
            row['load_avg_after'] = os.getloadavg()
            results.append(row)
    finally:
        if not a.workdir: shutil.rmtree(wd, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(results, indent=1))

if __name__ == '__main__':
    main()
