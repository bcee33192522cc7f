"""The status page (``/ui``): one self-contained HTML document, inline CSS, JS and SVG.

Nothing loads from anywhere else. The first figures are embedded in the page (so it renders at
once, without waiting for a request); then it refreshes from ``/ui/data`` every 5 seconds.
"""

from __future__ import annotations

from typing import Any

import orjson

_STYLE = """
:root{--bg:#0d1117;--panel:#161b22;--line:#30363d;--text:#e6edf3;--dim:#8b949e;--hit:#3fb950;--miss:#f0883e;--accent:#58a6ff}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{display:flex;align-items:baseline;gap:16px;padding:22px 32px 8px}h1{font-size:22px;margin:0;letter-spacing:.2px}
h1 span{color:var(--accent)}.sub{color:var(--dim)}main{padding:8px 32px 32px;display:grid;gap:18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:14px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .label{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.card .value{font-size:28px;font-weight:650;margin-top:4px;font-variant-numeric:tabular-nums}
.card .note{color:var(--dim);font-size:12px}.good{color:var(--hit)}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:16px}
.panel h2{font-size:14px;margin:0 0 10px;color:var(--dim);font-weight:600;text-transform:uppercase;letter-spacing:.6px}
.legend{display:flex;gap:16px;color:var(--dim);font-size:12px;margin-bottom:6px}.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}th,td{text-align:right;padding:7px 10px;border-bottom:1px solid var(--line)}
th:first-child,td:first-child{text-align:left}th{color:var(--dim);font-weight:600;font-size:12px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:18px}@media(max-width:1000px){.two{grid-template-columns:1fr}}
.empty{color:var(--dim);padding:18px 0;text-align:center}code{color:var(--accent)}svg text{fill:var(--dim);font-size:11px}
.bar{height:8px;background:var(--line);border-radius:4px;overflow:hidden;min-width:80px}.bar i{display:block;height:100%;background:var(--hit)}
"""

_SCRIPT = """
const $=s=>document.querySelector(s);
const fmt=n=>n>=1e9?(n/1e9).toFixed(1)+'B':n>=1e6?(n/1e6).toFixed(1)+'M':n>=1e4?(n/1e3).toFixed(1)+'k':String(Math.round(n));
const money=d=>d>=100?'$'+d.toFixed(0):d>=1?'$'+d.toFixed(2):'$'+d.toFixed(4);
const pct=r=>(100*r).toFixed(1)+'%';
const secs=s=>s>=3600?(s/3600).toFixed(1)+' h':s>=60?(s/60).toFixed(1)+' min':s.toFixed(1)+' s';
const esc=t=>String(t).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
function chart(points,now){
  const W=960,H=220,L=40,R=44,T=12,B=26,w=W-L-R,h=H-T-B,S=10;
  if(!points.length){return '<div class="empty">No requests yet: point a client at this proxy.</div>'}
  const last=Math.max(points[points.length-1].t,Math.floor(now/S)*S),first=points[0].t;
  const n=Math.min(360,Math.max(30,(last-first)/S+1)),start=last-(n-1)*S,step=w/n,bw=Math.max(1,step-1.5);
  const byT=new Map(points.map(p=>[p.t,p])),slots=[];
  for(let i=0;i<n;i++){slots.push(byT.get(start+i*S)||{t:start+i*S,hits:0,misses:0})}
  const maxReq=Math.max(1,...slots.map(p=>p.hits+p.misses)),x=i=>L+i*step;
  let s=`<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="hit rate over time">`;
  for(const f of [0,.5,1]){const y=T+h-f*h;s+=`<line x1="${L}" x2="${W-R}" y1="${y}" y2="${y}" stroke="#30363d"/><text x="${W-R+6}" y="${y+4}">${f*100}%</text><text x="${L-6}" y="${y+4}" text-anchor="end">${fmt(f*maxReq)}</text>`}
  const dots=[];
  slots.forEach((p,i)=>{const tot=p.hits+p.misses;if(!tot)return;const hh=h*tot/maxReq,hy=h*p.hits/maxReq;
    s+=`<rect x="${x(i)}" y="${T+h-hh}" width="${bw}" height="${hh-hy}" fill="#f0883e" opacity=".55"/><rect x="${x(i)}" y="${T+h-hy}" width="${bw}" height="${hy}" fill="#3fb950" opacity=".55"/>`;
    dots.push([x(i)+bw/2,T+h-h*p.hits/tot])});
  if(dots.length>1)s+=`<polyline points="${dots.map(d=>d.join(',')).join(' ')}" fill="none" stroke="#58a6ff" stroke-width="2.5" stroke-linejoin="round"/>`;
  for(const d of dots)s+=`<circle cx="${d[0]}" cy="${d[1]}" r="3" fill="#58a6ff"/>`;
  s+=`<text x="${L}" y="${H-6}">${new Date(start*1000).toLocaleTimeString()}</text><text x="${W-R}" y="${H-6}" text-anchor="end">now</text></svg>`;
  return s}
function render(d){
  const t=d.totals;
  $('#hit-rate').textContent=pct(t.hit_rate);$('#hit-note').textContent=`${fmt(t.hits)} hits · ${fmt(t.misses)} misses`;
  $('#requests').textContent=fmt(t.requests);$('#errors').textContent=t.errors?`${fmt(t.errors)} upstream errors`:'no upstream errors';
  $('#entries').textContent=d.entries==null?'—':fmt(d.entries);$('#backend').textContent=`${d.backend||'no cache'}${d.namespace?' · '+d.namespace:''} · scope ${d.cache_scope}`;
  $('#tokens').textContent=fmt(t.tokens_saved);$('#dollars').textContent=money(t.dollars_saved);
  $('#dollar-note').textContent=d.priced_models.length?`priced: ${d.priced_models.join(', ')}`:'no prices in the config';
  $('#time-saved').textContent=secs(t.seconds_saved);$('#uptime').textContent='up '+secs(t.uptime_seconds);
  $('#chart').innerHTML=chart(d.timeline,d.generated_at);
  $('#models').innerHTML=d.models.length?'<table><tr><th>model</th><th>requests</th><th>hit rate</th><th></th><th>tokens saved</th><th>$ saved</th></tr>'+d.models.map(m=>`<tr><td>${esc(m.model)}</td><td>${fmt(m.requests)}</td><td>${pct(m.hit_rate)}</td><td><div class="bar"><i style="width:${(100*m.hit_rate).toFixed(1)}%"></i></div></td><td>${fmt(m.tokens_saved)}</td><td>${money(m.dollars_saved)}</td></tr>`).join('')+'</table>':'<div class="empty">No requests yet.</div>';
  $('#slowest').innerHTML=d.slowest.length?'<table><tr><th>model</th><th>key</th><th>upstream took</th><th>hits</th><th>time saved</th></tr>'+d.slowest.map(s=>`<tr><td>${esc(s.model)} <span class="sub">${esc(s.route)}</span></td><td><code>${esc(s.key_hash)}</code></td><td>${s.upstream_ms.toFixed(0)} ms</td><td>${fmt(s.hits)}</td><td>${secs(s.saved_seconds)}</td></tr>`).join('')+'</table>':'<div class="empty">No upstream call avoided yet.</div>';
  $('#updated').textContent='updated '+new Date(d.generated_at*1000).toLocaleTimeString()}
render(JSON.parse(document.getElementById('data').textContent));
setInterval(()=>fetch('/ui/data',{credentials:'same-origin'}).then(r=>r.ok?r.json():null).then(d=>d&&render(d)).catch(()=>{}),5000);
"""

_BODY = """<header><h1><span>llmstash</span> proxy</h1><div class="sub" id="backend"></div><div class="sub" id="uptime"></div><div class="sub" id="updated" style="margin-left:auto"></div></header>
<main>
<section class="cards">
<div class="card"><div class="label">Hit rate</div><div class="value good" id="hit-rate">—</div><div class="note" id="hit-note"></div></div>
<div class="card"><div class="label">Requests</div><div class="value" id="requests">—</div><div class="note" id="errors"></div></div>
<div class="card"><div class="label">Entries</div><div class="value" id="entries">—</div><div class="note">in the cache</div></div>
<div class="card"><div class="label">Tokens saved</div><div class="value" id="tokens">—</div><div class="note">served from the cache</div></div>
<div class="card"><div class="label">Dollars saved</div><div class="value good" id="dollars">—</div><div class="note" id="dollar-note"></div></div>
<div class="card"><div class="label">Waiting saved</div><div class="value" id="time-saved">—</div><div class="note">upstream time avoided</div></div>
</section>
<section class="panel"><h2>Hit rate over time</h2><div class="legend"><span><i class="dot" style="background:#58a6ff"></i>hit rate</span><span><i class="dot" style="background:#3fb950"></i>hits</span><span><i class="dot" style="background:#f0883e"></i>misses</span><span>10-second buckets, this worker</span></div><div id="chart"></div></section>
<section class="two"><div class="panel"><h2>Models</h2><div id="models"></div></div><div class="panel"><h2>Slowest upstream calls avoided</h2><div id="slowest"></div></div></section>
</main>"""


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def page(snapshot: dict[str, Any]) -> str:
    """The status page with ``snapshot`` (``Proxy.snapshot()``) embedded as its first figures."""
    data = orjson.dumps(snapshot).decode().replace("<", "\\u003c")  # no "</script>" can end the block early
    return _document(
        "llmstash proxy",
        f'{_BODY}<script id="data" type="application/json">{data}</script><script>{_SCRIPT}</script>',
    )


def login_page(failed: bool) -> str:
    """A form asking for the master key (posted to ``/ui/login``, which sets the page's cookie)."""
    message = '<p class="sub" style="color:#f85149">That is not the master key.</p>' if failed else ""
    return _document(
        "llmstash proxy: sign in",
        '<main style="max-width:420px;margin:12vh auto"><div class="panel"><h1><span>llmstash</span> proxy</h1>'
        f'<p class="sub">The status page needs the master key.</p>{message}'
        '<form method="post" action="/ui/login"><input name="key" type="password" autocomplete="current-password" '
        'placeholder="master key" style="width:100%;padding:9px;border-radius:6px;border:1px solid #30363d;'
        'background:#0d1117;color:#e6edf3"><button style="margin-top:10px;padding:8px 16px;border-radius:6px;border:0;'
        'background:#238636;color:white;font-weight:600">Open</button></form></div></main>',
    )
