# Writes the JSON/SSE/NDJSON fixtures of this folder (python3 generate.py, deterministic);
# anthropic_* are written by hand. Shapes and sources: README.md.
import json, random, math
random.seed(7)
def lps(n, top=None):
    top = top if top is not None else -random.random()*0.6
    v=[top]+sorted([top-random.random()*8-0.05 for _ in range(n-1)], reverse=True)
    return [round(x, random.choice([6,9,12,15])) for x in v]
toks=[" The"," sky"," is"," blue"," because"," of"," Ray","leigh"," scattering","."]
alts=[" A"," Our"," It"," red"," grey"," since"," due"," Mie","igh"," light",","," and"," the"," Ray"," so"]
def w(name, s):
    open(name,'w').write(s)

# ---- Gemini generateContent (non-streamed), 2 candidates, responseLogprobs + logprobs=3
def gem_cand(idx, words, ntop=3, with_index=True):
    chosen=[]; top=[]
    for i,t in enumerate(words):
        v=lps(ntop)
        cs=[{"token":t,"tokenId":1000+i,"logProbability":v[0]}]+[{"token":alts[(i+j)%len(alts)],"tokenId":2000+i*10+j,"logProbability":v[j]} for j in range(1,ntop)]
        top.append({"candidates":cs})
        chosen.append({"token":t,"tokenId":1000+i,"logProbability":v[0]})
    c={}
    if with_index and idx: c["index"]=idx
    c.update({"content":{"parts":[{"text":"".join(words)}],"role":"model"},"finishReason":"STOP",
      "avgLogprobs":sum(x["logProbability"] for x in chosen)/len(chosen),
      "logprobsResult":{"topCandidates":top,"chosenCandidates":chosen,"logProbabilitySum":sum(x["logProbability"] for x in chosen)}})
    return c
body={"candidates":[gem_cand(0,toks[:5]),gem_cand(1,[" Blue"," light"," scatters"," more","."])],
 "usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":10,"totalTokenCount":18,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]},
 "modelVersion":"gemini-2.0-flash","responseId":"mAitaLmkHPPlz7IPvtfUqQ4"}
w("gemini_generate_body.json", json.dumps(body, indent=2, ensure_ascii=False)+"\n")

# ---- Gemini streamGenerateContent?alt=sse: CRLF events, one candidate
ev=[]
chunks=[toks[0:3],toks[3:6],toks[6:10]]
for k,ch in enumerate(chunks):
    c=gem_cand(0,ch)
    if k<2: del c["finishReason"]
    e={"candidates":[c],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8+3*(k+1)} ,"modelVersion":"gemini-2.0-flash","responseId":"nBitaIeFOIHqz7IP1J3R6Ac"}
    if k==2: e["usageMetadata"]={"promptTokenCount":8,"candidatesTokenCount":10,"totalTokenCount":18}
    ev.append("data: "+json.dumps(e,separators=(",",":"),ensure_ascii=False)+"\r\n\r\n")
w("gemini_stream.sse","".join(ev))

# ---- Gemini streamGenerateContent without alt=sse: one JSON array (pretty, as the REST API sends it); avgLogprobs only (no logprobs requested)
arr=[]
for k,ch in enumerate(chunks):
    c={"content":{"parts":[{"text":"".join(ch)}],"role":"model"}}
    if k==2:
        c["finishReason"]="STOP"; c["avgLogprobs"]=-0.3817202317714691
    arr.append({"candidates":[c],"usageMetadata":{"promptTokenCount":8,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.0-flash-001","createTime":"2025-06-01T10:00:00.000000Z","responseId":"r"+str(k)})
s=json.dumps(arr, indent=2)
s=s.replace("\n  },\n  {","\n  }\n,\r\n  {")  # the REST stream's element separator
w("gemini_stream_array.json", s+"\n")

# ---- TGI /generate with details, decoder_input_details, top_n_tokens=3, best_of=2
def tgi_tok(i,t,v,special=False): return {"id":100+i,"text":t,"logprob":v,"special":special}
def tgi_seq(words):
    tokens=[];tops=[]
    for i,t in enumerate(words):
        v=lps(3)
        tokens.append(tgi_tok(i,t,v[0]))
        tops.append([tgi_tok(i,t,v[0])]+[tgi_tok(50+i*3+j,alts[(i+j)%len(alts)],v[j]) for j in (1,2)])
    return tokens,tops
prefill=[{"id":1,"text":"<s>","logprob":None}]+[{"id":10+i,"text":t,"logprob":round(-random.random()*9,7)} for i,t in enumerate([" Why"," is"," the"," sky"," blue","?"])]
tk,tp=tgi_seq(toks[:4]); tk2,tp2=tgi_seq([" Because"," of"," light","."])
body={"generated_text":"".join(toks[:4]),"details":{"finish_reason":"length","generated_tokens":4,"seed":42,"prefill":prefill,"tokens":tk,"top_tokens":tp,
  "best_of_sequences":[{"generated_text":"".join([" Because"," of"," light","."]),"finish_reason":"eos_token","generated_tokens":4,"seed":7,"prefill":prefill,"tokens":tk2,"top_tokens":tp2}]}}
w("tgi_generate_body.json", json.dumps(body, separators=(",",":"), ensure_ascii=False)+"\n")
# TGI compat route / : array
w("tgi_compat_body.json", json.dumps([{"generated_text":"".join(toks[:4]),"details":{"finish_reason":"length","generated_tokens":4,"seed":None,"prefill":[],"tokens":tk,"top_tokens":tp}}], separators=(",",":"))+"\n")
# TGI /generate_stream
ev=[]
for i,t in enumerate(toks[:6]):
    v=lps(3)
    e={"index":i+1,"token":tgi_tok(i,t,v[0]),"top_tokens":[tgi_tok(i,t,v[0])]+[tgi_tok(60+i*3+j,alts[(i+j)%len(alts)],v[j]) for j in (1,2)],"generated_text":None,"details":None}
    if i==5:
        e["generated_text"]="".join(toks[:6]); e["details"]={"finish_reason":"length","generated_tokens":6,"input_length":7,"seed":None}
    ev.append("data:"+json.dumps(e,separators=(",",":"),ensure_ascii=False)+"\n\n")
w("tgi_generate_stream.sse","".join(ev))

# ---- llama.cpp /completion
def ll_new(i,t,prob=False):
    v=lps(4)
    val="prob" if prob else "logprob"
    tops=[]
    for j in range(4):
        tt=t if j==0 else alts[(i+j)%len(alts)]
        x=v[j]
        tops.append({"id":300+i*4+j,"token":tt,"bytes":list(tt.encode()),val:(round(math.exp(x),random.choice([6,9,15])) if prob else x)})
    return {"id":300+i*4,"token":t,"bytes":list(t.encode()),val:(round(math.exp(v[0]),9) if prob else v[0]),("top_probs" if prob else "top_logprobs"):tops}
base={"index":0,"content":"".join(toks[:4]),"tokens":[],"id_slot":0,"stop":True,"model":"gpt-3.5-turbo","tokens_predicted":4,"tokens_evaluated":7,
  "prompt":"<s> Why is the sky blue?","has_new_line":False,"truncated":False,"stop_type":"limit","stopping_word":"","tokens_cached":10,
  "timings":{"prompt_n":7,"prompt_ms":21.5,"predicted_n":4,"predicted_ms":60.1},"completion_probabilities":[ll_new(i,t) for i,t in enumerate(toks[:4])]}
w("llamacpp_completion_body.json", json.dumps(base, separators=(",",":"), ensure_ascii=False)+"\n")
base2=dict(base); base2["completion_probabilities"]=[ll_new(i,t,True) for i,t in enumerate(toks[:4])]
w("llamacpp_completion_post_sampling.json", json.dumps(base2, indent=2, ensure_ascii=False)+"\n")
def ll_old(i,t):
    v=lps(4)
    return {"content":t,"probs":[{"prob":round(math.exp(v[j]),6),"tok_str":(t if j==0 else alts[(i+j)%len(alts)])} for j in range(4)]}
old={"content":"".join(toks[:4]),"generation_settings":{"n_ctx":2048,"n_probs":4,"temperature":0.8},"model":"models/7B/ggml-model.gguf","prompt":"Why is the sky blue?",
 "stop":True,"stopped_eos":False,"stopped_limit":True,"stopped_word":False,"stopping_word":"","timings":{"predicted_n":4},"tokens_cached":10,"tokens_evaluated":6,"truncated":False,
 "completion_probabilities":[ll_old(i,t) for i,t in enumerate(toks[:4])]}
w("llamacpp_completion_old.json", json.dumps(old, indent=2, ensure_ascii=False)+"\n")
ev=[]
for i,t in enumerate(toks[:5]):
    e={"index":0,"content":t,"tokens":[300+i*4],"stop":False,"id_slot":-1,"tokens_predicted":i+1,"tokens_evaluated":7,"completion_probabilities":[ll_new(i,t)]}
    ev.append("data: "+json.dumps(e,separators=(",",":"),ensure_ascii=False)+"\n\n")
fin={"index":0,"content":"","tokens":[],"id_slot":0,"stop":True,"model":"gpt-3.5-turbo","tokens_predicted":5,"tokens_evaluated":7,"stop_type":"limit","stopping_word":"","tokens_cached":11,"timings":{"prompt_n":7,"predicted_n":5}}
ev.append("data: "+json.dumps(fin,separators=(",",":"))+"\n\n")
w("llamacpp_completion_stream.sse","".join(ev))

# ---- Ollama /api/generate stream (NDJSON) and /api/chat body
def ol_entry(i,t):
    v=lps(3)
    return {"token":t,"logprob":v[0],"bytes":list(t.encode()),"top_logprobs":[{"token":(t if j==0 else alts[(i+j)%len(alts)]),"logprob":v[j],"bytes":list((t if j==0 else alts[(i+j)%len(alts)]).encode())} for j in range(3)]}
lines=[]
for i,t in enumerate(toks[:5]):
    lines.append(json.dumps({"model":"gemma3","created_at":"2025-11-12T02:04:0%d.123456Z"%i,"response":t,"done":False,"logprobs":[ol_entry(i,t)]},separators=(",",":"),ensure_ascii=False))
lines.append(json.dumps({"model":"gemma3","created_at":"2025-11-12T02:04:05.5Z","response":"","done":True,"done_reason":"stop","context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":5,"eval_duration":4232710000},separators=(",",":")))
w("ollama_generate_stream.ndjson","\n".join(lines)+"\n")
chat={"model":"gemma3","created_at":"2025-11-12T02:05:00.1Z","message":{"role":"assistant","content":"".join(toks[:4]),"thinking":"The user asks about the sky."},"done":True,"done_reason":"stop",
 "total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":4,"eval_duration":4535599000,"logprobs":[ol_entry(i,t) for i,t in enumerate(toks[:4])]}
w("ollama_chat_body.json", json.dumps(chat, indent=2, ensure_ascii=False)+"\n")

# ---- vLLM: completions with echo + logprobs=2 + prompt_logprobs=2; chat with prompt_logprobs
ptoks=["<|begin_of_text|>","Why"," is"," the"," sky"]
def plp(i):
    if i==0: return None
    v=lps(3,top=-round(random.random()*3,4))
    d={}
    d[str(500+i)]={"logprob":v[1],"rank":2,"decoded_token":ptoks[i]}
    d[str(900+i)]={"logprob":v[0],"rank":1,"decoded_token":alts[i]}
    d[str(700+i)]={"logprob":v[2],"rank":3,"decoded_token":alts[i+1]}
    return d
alltoks=ptoks+toks[:3]
tl=[None]+[lps(1)[0]*-(-1) for _ in alltoks[1:]]
tl=[None]+[round(-random.random()*6,8) for _ in alltoks[1:]]
top=[None]+[{t:tl[i+1], alts[i]:round(tl[i+1]-random.random()*3,8)} for i,t in enumerate(alltoks[1:])]
off=[0]; 
for t in alltoks[:-1]: off.append(off[-1]+len(t))
comp={"id":"cmpl-3f2a","object":"text_completion","created":1735000000,"model":"meta-llama/Llama-3.1-8B","choices":[{"index":0,"text":"".join(alltoks),
 "logprobs":{"text_offset":off,"token_logprobs":tl,"tokens":alltoks,"top_logprobs":top},"finish_reason":"length","stop_reason":None,"prompt_logprobs":[plp(i) for i in range(len(ptoks))]}],
 "usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}
w("vllm_completion_echo.json", json.dumps(comp, ensure_ascii=False)+"\n")
chatv={"id":"chatcmpl-9b1c","object":"chat.completion","created":1735000001,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Blue.","tool_calls":[]},"logprobs":None,"finish_reason":"stop","stop_reason":None}],
 "usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2},"prompt_logprobs":[plp(i) for i in range(len(ptoks))]}
w("vllm_chat_prompt_logprobs.json", json.dumps(chatv, ensure_ascii=False)+"\n")
