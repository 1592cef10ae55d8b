"""The one web page: resolve an identifier in a browser (proofs are checked with the CLI)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeroot resolver: {{origin}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}
input{width:70%;padding:.4rem}table{border-collapse:collapse;margin-top:1rem}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
code{word-break:break-all}</style></head>
<body><h1>Resolve an identifier</h1>
<p>Node <code>{{origin}}</code>. Answers carry a map proof and a receipt; check them offline with
<code>edgeroot resolve ID --root URL --verify --policy policy.txt</code>.</p>
<form id="f"><input id="id" placeholder="88.123.99/PUMP-0042" autofocus> <button>Resolve</button></form>
<div id="out"></div>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const id = document.getElementById("id").value.trim();
  const out = document.getElementById("out");
  const [prefix, ...rest] = id.split("/");
  const path = encodeURIComponent(prefix) + "/" + rest.map(encodeURIComponent).join("/");
  const r = await fetch("/v1/resolve/" + path);
  const j = await r.json();
  out.textContent = "";
  const h = document.createElement("p");
  if (!r.ok) { h.textContent = j.message; out.append(h); return; }
  h.textContent = j.found ? `${j.identifier} as of log size ${j.proof.epoch}`
                          : `${j.identifier} is not registered (proven absent at log size ${j.proof.epoch})`;
  out.append(h);
  if (!j.found) return;
  const t = document.createElement("table");
  t.innerHTML = "<tr><th>index</th><th>type</th><th>value</th><th>ttl</th><th>timestamp</th></tr>";
  for (const v of j.values) {
    const row = t.insertRow();
    for (const x of [v.index, v.type, v.data.value, v.ttl, v.timestamp]) {
      const c = row.insertCell(); const code = document.createElement("code");
      code.textContent = String(x); c.append(code);
    }
  }
  out.append(t);
};
</script></body></html>
"""
