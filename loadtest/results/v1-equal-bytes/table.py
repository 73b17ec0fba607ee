import json,glob,os,sys,re,statistics as st
out=sys.argv[1]
def q(metrics,qq):
    b=[]
    for l in open(metrics):
        m=re.match(r'hubcast_publish_to_socket_seconds_bucket\{.*origin="local".*le="([^"]+)"\} (\d+)',l) or re.match(r'hubcast_publish_to_socket_seconds_bucket\{.*le="([^"]+)".*origin="local".*\} (\d+)',l)
        if m: b.append((float('inf') if m[1]=='+Inf' else float(m[1]),int(m[2])))
    if not b: return float('nan')
    tot=b[-1][1]; tgt=qq*tot; prev=(0.0,0)
    for le,c in b:
        if c>=tgt:
            lo,pc=prev
            return (lo+(le-lo)*(tgt-pc)/max(c-pc,1))*1000
        prev=(le,c)
rows={}
for f in sorted(glob.glob(out+'/*.json')):
    name=os.path.basename(f).rsplit('-run',1)[0]
    d=json.load(open(f)); s=d['steps'][0]; sv=s['server']; dl=s['received'] or 1
    m=f[:-5]+'.metrics'
    rows.setdefault(name,[]).append((s['latency']['p50_us']/1000,s['latency']['p99_us']/1000,q(m,.5),q(m,.99),sv['cpu_ns_per_delivery'],s['lost'],s['client'].get('machine_busy',0)))
for k in sorted(rows, key=lambda k:(int(k.split('-')[1]),k)):
    v=rows[k]
    print(k.ljust(14),' | '.join(f"c {a:.0f}/{b:.0f} s {c:.0f}/{d:.0f} cpu {e:.0f} L{f}" for a,b,c,d,e,f,g in v), ' mean cli p99 %.0f srv p99 %.0f'%(st.mean(x[1] for x in v),st.mean(x[3] for x in v)))
