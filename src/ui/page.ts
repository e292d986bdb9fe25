/**
 * The web UI: one self-contained page (no external assets: it must work on
 * an air-gapped host) showing the network map and the live flows. It reads
 * the same API as the CLI: /v1/status and /v1/flows.
 */
export function renderUi(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bastion</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#d8dee9}
header{padding:10px 16px;background:#161b22;border-bottom:1px solid #30363d;display:flex;gap:16px;align-items:baseline}
h1{font-size:18px;margin:0}h2{font-size:15px;margin:12px 0 6px}
main{display:grid;grid-template-columns:480px 1fr;gap:16px;padding:16px}
svg{background:#161b22;border:1px solid #30363d;border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #21262d;text-align:left}
.DROPPED{color:#ff7b72}.ALLOWED{color:#7ee787}.AUDIT{color:#e3b341}.ARP_REPLY{color:#79c0ff}.muted{color:#8b949e}
</style></head><body>
<header><h1>Bastion</h1><span id="summary" class="muted">loading…</span></header>
<main>
<section><h2>Network map</h2><svg id="map" width="480" height="420"></svg>
<h2>Containers</h2><table id="eps"><thead><tr><th>name</th><th>identity</th><th>ip</th><th>stack</th><th>drops</th></tr></thead><tbody></tbody></table>
<h2>Unprotected</h2><table id="unp"><tbody></tbody></table></section>
<section><h2>Live flows</h2><table id="flows"><thead><tr><th>time</th><th>source</th><th>destination</th><th>proto</th><th>verdict</th><th>reason</th><th>policies</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
const esc=s=>String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
async function refresh(){
  const st=await (await fetch('/v1/status')).json();
  document.getElementById('summary').textContent=st.endpoints.length+' containers · mode '+st.daemon.mode+' · '+st.rules.length+' rules · '+(st.ok?'all stacks in place':'STACK MISSING');
  document.querySelector('#eps tbody').innerHTML=st.endpoints.map(e=>'<tr><td>'+esc(e.name)+'</td><td>'+e.identity+'</td><td>'+esc(e.ipv4)+'</td><td>'+(e.stack.ok?'ok':'<b class=DROPPED>missing</b>')+'</td><td>'+e.counters.drops+'</td></tr>').join('');
  document.querySelector('#unp tbody').innerHTML=st.unprotected.map(u=>'<tr><td>'+esc(u.name)+'</td><td class=AUDIT>'+esc(u.reason)+'</td></tr>').join('')||'<tr><td class=muted>none</td></tr>';
  drawMap(st);
}
function drawMap(st){
  const svg=document.getElementById('map'),n=st.endpoints.length,cx=240,cy=210,r=150;
  const pos={};st.endpoints.forEach((e,i)=>{const a=2*Math.PI*i/Math.max(n,1)-Math.PI/2;pos[e.name]=[cx+r*Math.cos(a),cy+r*Math.sin(a)];});
  pos.host=[cx,cy];
  const edges=(window.edges||new Map());let out='';
  for(const [k,v] of edges){const [s,d]=k.split('>');if(!pos[s]||!pos[d])continue;out+='<line x1="'+pos[s][0]+'" y1="'+pos[s][1]+'" x2="'+pos[d][0]+'" y2="'+pos[d][1]+'" stroke="'+(v==='DROPPED'?'#ff7b72':'#7ee787')+'" stroke-width="2" opacity="0.7"/>';}
  out+='<circle cx="'+cx+'" cy="'+cy+'" r="18" fill="#30363d"/><text x="'+cx+'" y="'+(cy+4)+'" fill="#8b949e" text-anchor="middle">host</text>';
  for(const e of st.endpoints){const [x,y]=pos[e.name];out+='<circle cx="'+x+'" cy="'+y+'" r="22" fill="#1f6feb"/><text x="'+x+'" y="'+(y+38)+'" fill="#d8dee9" text-anchor="middle">'+esc(e.name)+'</text>';}
  svg.innerHTML=out;
}
async function follow(){
  window.edges=new Map();
  const res=await fetch('/v1/flows?follow=1&limit=50');const rd=res.body.getReader();const dec=new TextDecoder();let buf='';
  const tb=document.querySelector('#flows tbody');
  for(;;){const {value,done}=await rd.read();if(done)break;buf+=dec.decode(value,{stream:true});let i;
    while((i=buf.indexOf('\\n'))>=0){const f=JSON.parse(buf.slice(0,i));buf=buf.slice(i+1);
      if(f.type==='lost'){tb.insertAdjacentHTML('afterbegin','<tr><td colspan=7 class=AUDIT>'+f.count+' flows lost: this page fell behind</td></tr>');continue;}
      const end=p=>esc(p.name??p.ip)+(p.port!==undefined?':'+p.port:'');
      tb.insertAdjacentHTML('afterbegin','<tr><td class=muted>'+esc(f.time.slice(11,23))+'</td><td>'+end(f.src)+'</td><td>'+end(f.dst)+'</td><td>'+esc(f.protocol)+'</td><td class='+f.verdict+'>'+f.verdict+'</td><td>'+esc(f.reason)+'</td><td>'+esc([f.policies&&f.policies.egress,f.policies&&f.policies.ingress].filter(Boolean).join(' / '))+'</td></tr>');
      while(tb.rows.length>300)tb.deleteRow(-1);
      if(f.src.name&&f.dst.name)window.edges.set(f.src.name+'>'+f.dst.name,f.verdict);
    }}
}
refresh();setInterval(refresh,2000);follow();
</script></body></html>`;
}
