package traffic

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Production-like families: the traffic a provider sees beside the
// textbook workloads of traffic.go. Agents and coding assistants share a
// long system prompt and tool schema across many accounts and re-send the
// same user turn through tool loops; retrieval (RAG) applications send one
// fixed template filled with retrieved passages for many end users through
// one key; people copy popular persona prompts; offices share a NAT;
// confidence displays ask for a few logprobs. The attacks are the ones
// public reports describe: diffuse campaigns through many fresh accounts,
// harvesting dressed as chat, soft-label harvesting and distributed
// logit-bias probing.
//
// Every content table has two variants (Options.Variant): variant 0 is the
// one the scoring defaults are tuned on, variant 1 is held out (other
// system prompts, tool schemas, personas, wrappers, follow-ups, reasoning
// demands and timing).

// variantOf picks the variant's half of a two-variant table.
func variantOf[T any](b *builder, v [2]T) T { return v[b.variant&1] }

// timing scales the family's gaps for the held-out variant, so timing
// quirks of the tuned variant are not what detection relies on.
func (b *builder) gapScale() float64 {
	if b.variant&1 == 1 {
		return 1.35
	}
	return 1
}

func (a *account) wait(rng *rand.Rand, median time.Duration, sigma float64, scale float64) {
	a.t = a.t.Add(lognormal(rng, time.Duration(float64(median)*scale), sigma))
}

// toWorkday moves t to the next working hour (08:00-18:00 UTC, Monday to
// Friday) when it falls outside one.
func toWorkday(rng *rand.Rand, t time.Time) time.Time {
	for i := 0; i < 14; i++ {
		wd := t.Weekday()
		h := t.Hour()
		if wd != time.Saturday && wd != time.Sunday && h >= 8 && h < 18 {
			return t
		}
		next := time.Date(t.Year(), t.Month(), t.Day(), 8, 0, 0, 0, time.UTC)
		if h >= 8 {
			next = next.Add(day)
		}
		t = next.Add(time.Duration(rng.IntN(90)) * time.Minute)
	}
	return t
}

// Agent request bodies: messages carry tool calls and tool results
// (https://platform.openai.com/docs/guides/function-calling).
type toolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type toolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function toolFunction `json:"function"`
}

type agentMessage struct {
	Role       string     `json:"role"`
	Content    *string    `json:"content"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type agentBody struct {
	Model       string            `json:"model"`
	Messages    []agentMessage    `json:"messages"`
	Tools       []json.RawMessage `json:"tools"`
	Temperature *float64          `json:"temperature,omitempty"`
	MaxTokens   int               `json:"max_tokens,omitempty"`
	Stream      bool              `json:"stream,omitempty"`
}

func sptr(s string) *string { return &s }

// agentApp is one coding assistant product: its system prompt, its tools
// and the client it sends from.
type agentApp struct {
	system string
	tools  []string // JSON schemas
	ua     string
	model  string
}

var agentApps = [2][]agentApp{
	{
		{
			system: `You are Forge, an interactive command-line coding assistant. You help developers with software engineering tasks in the repository they opened: fixing bugs, adding features, refactoring, explaining code and running tests.
Rules:
- Before changing a file, read it. Prefer small, focused edits over rewrites.
- Run the project's tests after every change that could affect them and report the result honestly.
- Never invent file contents, command output or test results. If a command fails, show the error and propose a fix.
- Keep answers short: the user reads them in a terminal. Use Markdown only for code blocks.
- Do not commit, push or delete branches unless the user asks.
- When a task is ambiguous, ask one clarifying question instead of guessing.
Environment: the working directory is the repository root. You can call the tools below; call several in one turn when they are independent.`,
			tools: []string{
				`{"type":"function","function":{"name":"read_file","description":"Read a file from the repository.","parameters":{"type":"object","properties":{"path":{"type":"string"},"offset":{"type":"integer"},"limit":{"type":"integer"}},"required":["path"]}}}`,
				`{"type":"function","function":{"name":"write_file","description":"Create or overwrite a file.","parameters":{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}}}`,
				`{"type":"function","function":{"name":"edit_file","description":"Replace an exact string in a file.","parameters":{"type":"object","properties":{"path":{"type":"string"},"old":{"type":"string"},"new":{"type":"string"}},"required":["path","old","new"]}}}`,
				`{"type":"function","function":{"name":"run_command","description":"Run a shell command in the repository and return its output.","parameters":{"type":"object","properties":{"command":{"type":"string"},"timeout_ms":{"type":"integer"}},"required":["command"]}}}`,
				`{"type":"function","function":{"name":"search","description":"Search the repository with a regular expression.","parameters":{"type":"object","properties":{"pattern":{"type":"string"},"glob":{"type":"string"}},"required":["pattern"]}}}`,
			},
			ua: "forge-cli/2.3.1 (darwin; node 20.11.1)", model: "gpt-4o",
		},
		{
			system: `You are CodeMate, a pair-programming assistant inside the editor. The user works on a software project; you see the files they share and can use tools to inspect and change the workspace.
Guidelines: explain your plan in one sentence, then act. Read code before editing it. After editing, run the relevant tests or the build and fix what breaks. Quote errors verbatim. Never claim a test passes without running it. Respect the project's style and existing abstractions; do not add dependencies without asking. If you are unsure what the user wants, ask.`,
			tools: []string{
				`{"type":"function","function":{"name":"open","description":"Open a workspace file.","parameters":{"type":"object","properties":{"file":{"type":"string"}},"required":["file"]}}}`,
				`{"type":"function","function":{"name":"apply_patch","description":"Apply a unified diff to the workspace.","parameters":{"type":"object","properties":{"patch":{"type":"string"}},"required":["patch"]}}}`,
				`{"type":"function","function":{"name":"terminal","description":"Run a command in the integrated terminal.","parameters":{"type":"object","properties":{"cmd":{"type":"string"}},"required":["cmd"]}}}`,
				`{"type":"function","function":{"name":"find_symbol","description":"Find the definition and references of a symbol.","parameters":{"type":"object","properties":{"symbol":{"type":"string"}},"required":["symbol"]}}}`,
			},
			ua: "codemate-vscode/1.18.0 OpenAI/NodeJS/4.67.1", model: "gpt-4o-mini",
		},
	},
	{
		{
			system: `You are Shipwright, an autonomous software agent. You operate in a sandboxed checkout of the user's repository and complete the engineering task you are given end to end.
Working method:
1. Explore: list and read the files relevant to the task.
2. Plan: state the change you will make.
3. Implement with minimal diffs; keep public interfaces stable unless the task requires otherwise.
4. Verify: build and run the tests; iterate until they pass or you can explain why they cannot.
5. Summarize what changed and why, in at most five bullet points.
Never fabricate tool output. Never run destructive commands (rm -rf, git push --force, dropping databases). Ask before touching files outside the repository.`,
			tools: []string{
				`{"type":"function","function":{"name":"bash","description":"Execute a bash command in the sandbox.","parameters":{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}}}`,
				`{"type":"function","function":{"name":"str_replace_editor","description":"View, create and edit files.","parameters":{"type":"object","properties":{"command":{"type":"string","enum":["view","create","str_replace","insert"]},"path":{"type":"string"},"old_str":{"type":"string"},"new_str":{"type":"string"},"file_text":{"type":"string"}},"required":["command","path"]}}}`,
				`{"type":"function","function":{"name":"grep","description":"Search file contents.","parameters":{"type":"object","properties":{"pattern":{"type":"string"},"path":{"type":"string"}},"required":["pattern"]}}}`,
				`{"type":"function","function":{"name":"glob","description":"List files matching a pattern.","parameters":{"type":"object","properties":{"pattern":{"type":"string"}},"required":["pattern"]}}}`,
				`{"type":"function","function":{"name":"web_fetch","description":"Fetch a documentation page.","parameters":{"type":"object","properties":{"url":{"type":"string"}},"required":["url"]}}}`,
			},
			ua: "shipwright/0.14.2 python-httpx/0.27.0", model: "gpt-4o",
		},
		{
			system: `You are Terminal Copilot. You help the user in their shell session: write scripts, debug programs, explain errors and make code changes in the current directory. Be concise. Show commands before running them. Read before you write. Run tests after changes.`,
			tools: []string{
				`{"type":"function","function":{"name":"shell","description":"Run a shell command.","parameters":{"type":"object","properties":{"argv":{"type":"array","items":{"type":"string"}}},"required":["argv"]}}}`,
				`{"type":"function","function":{"name":"read","description":"Read a file.","parameters":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}}`,
				`{"type":"function","function":{"name":"write","description":"Write a file.","parameters":{"type":"object","properties":{"path":{"type":"string"},"text":{"type":"string"}},"required":["path","text"]}}}`,
			},
			ua: "terminal-copilot/3.0.0 OpenAI/Python 1.51.0", model: "qwen2.5-72b-instruct",
		},
	},
}

// Coding tasks: {f} a file, {s} a symbol, {c} a command.
var agentTasks = [2][]string{
	{
		"Fix the failing test in {f}.", "Add a --verbose flag to the {c} command.", "Why does {s} return nil when the cache is empty?",
		"Refactor {s} so it no longer uses a global variable.", "Write unit tests for {s} in {f}.", "The build fails with an import cycle after my last change; fix it.",
		"Rename {s} to something clearer and update all callers.", "Add input validation to {s} and return a proper error.",
		"Explain what {f} does and where it is used.", "Upgrade the logging in {f} to structured logs.", "Make {c} read its configuration from an environment variable.",
		"There is a race in {s}; find it and fix it.", "Add pagination to the list endpoint handled in {f}.", "Remove the dead code in {f}.",
		"Port {s} from callbacks to async/await.", "Why is {c} so slow on large inputs? Profile it and speed it up.",
		"Add a retry with exponential backoff around the HTTP call in {s}.", "Document the public functions in {f}.",
	},
	{
		"The CI job for {c} is red since this morning, can you look?", "Implement a dry-run mode for {c}.", "{s} panics on an empty slice. Please fix and add a regression test.",
		"Split {f} into smaller files by responsibility.", "Add metrics for request latency in {s}.", "Migrate {f} to the new config format.",
		"Find every place where we ignore the error from {s} and handle it.", "Make the output of {c} deterministic.",
		"Convert the tests in {f} to table-driven tests.", "Add a health check endpoint next to the one in {f}.", "Why does {s} allocate so much? Reduce it.",
		"Write a migration script for the schema change described in {f}.", "Add type hints to {f} and make mypy pass.", "Cache the result of {s} for five minutes.",
	},
}

var (
	agentFiles   = [...]string{"internal/cache/lru.go", "src/server/routes.ts", "pkg/auth/token.go", "app/models/user.py", "lib/parser.rs", "cmd/sync/main.go", "src/utils/date.js", "services/billing/invoice.py", "core/queue.go", "web/components/Table.tsx"}
	agentSymbols = [...]string{"LoadConfig", "parseHeader", "UserRepository.find", "retryRequest", "buildIndex", "handleUpload", "normalizePath", "scheduleJob", "computeDiscount", "flushBuffer"}
	agentCmds    = [...]string{"sync", "export", "migrate", "serve", "import", "backup", "lint"}
	agentFollow  = [2][]string{
		{"Looks good, now also update the README.", "Run the full test suite again please.", "Can you also handle the case where the input is empty?", "Please revert the change to the tests and try another approach.", "Great. Commit message suggestion?", "Also add a changelog entry."},
		{"Nice. Can you add a benchmark for it too?", "That broke the linter, please fix.", "Use the existing helper instead of a new function.", "Ok, now do the same for the other handler.", "Please keep the public API unchanged.", "Ship it. Write a short summary for the PR."},
	}
)

func fillTask(rng *rand.Rand, s string) string {
	s = strings.ReplaceAll(s, "{f}", pick(rng, agentFiles[:]))
	s = strings.ReplaceAll(s, "{s}", pick(rng, agentSymbols[:]))
	return strings.ReplaceAll(s, "{c}", pick(rng, agentCmds[:]))
}

// toolOutput is plausible tool output text: a code excerpt built from the
// corpus's words, or a test report.
func toolOutput(rng *rand.Rand, b *builder) string {
	switch rng.IntN(3) {
	case 0:
		return fmt.Sprintf("--- FAIL: Test%s (0.%02ds)\n    %s_test.go:%d: got %d, want %d\nFAIL\nexit status 1", pick(rng, agentSymbols[:]), rng.IntN(100), pick(rng, agentCmds[:]), 10+rng.IntN(300), rng.IntN(50), rng.IntN(50))
	case 1:
		return fmt.Sprintf("ok  \texample.com/%s\t%d.%03ds", pick(rng, agentCmds[:]), rng.IntN(5), rng.IntN(1000))
	}
	var sb strings.Builder
	for i := 0; i < 6+rng.IntN(20); i++ {
		fmt.Fprintf(&sb, "%d\tfunc %s%d(ctx context.Context, in %s) error { // %s\n", i+1, pick(rng, agentSymbols[:]), rng.IntN(9), pick(rng, agentCmds[:]), firstWords(pick(rng, b.corpus.Questions), 6))
	}
	return sb.String()
}

func firstWords(s string, n int) string {
	w := strings.Fields(s)
	if len(w) > n {
		w = w[:n]
	}
	return strings.Join(w, " ")
}

// genAgent: a developer using a coding assistant on workdays: each task is
// a user turn followed by a tool loop (every request re-sends the
// conversation, the same user turn followed by the assistant's tool calls
// and the tools' results), sometimes a follow-up turn and another loop.
func genAgent(b *builder, a *account) {
	rng := a.rng
	apps := variantOf(b, agentApps)
	app := apps[rng.IntN(len(apps))]
	a.header["user-agent"] = app.ua
	a.addr = residentialAddr(rng)
	if rng.Float64() < 0.3 {
		a.addr = cloudAddr(rng) // a dev box in the cloud
	}
	tools := make([]json.RawMessage, len(app.tools))
	for i, t := range app.tools {
		tools[i] = json.RawMessage(t)
	}
	tasks := variantOf(b, agentTasks)
	follows := variantOf(b, agentFollow)
	gs := b.gapScale()
	a.t = toWorkday(rng, a.t)
	for task := 0; a.emitted < a.n; task++ {
		if task > 0 {
			a.wait(rng, 25*time.Minute, 1.0, gs)
			a.t = toWorkday(rng, a.t)
		}
		if a.t.After(b.start.Add(Horizon)) {
			return
		}
		msgs := []agentMessage{{Role: "system", Content: sptr(app.system)}, {Role: "user", Content: sptr(fillTask(rng, pick(rng, tasks)))}}
		for turn := 0; turn < 1+rng.IntN(2) && a.emitted < a.n; turn++ {
			if turn > 0 {
				a.wait(rng, 90*time.Second, 0.8, gs)
				msgs = append(msgs, agentMessage{Role: "user", Content: sptr(pick(rng, follows))})
			}
			steps := 2 + rng.IntN(12)
			for step := 0; step < steps && a.emitted < a.n; step++ {
				if step > 0 || turn > 0 {
					a.wait(rng, 5*time.Second, 0.7, gs)
				}
				body := agentBody{Model: app.model, Messages: append([]agentMessage(nil), msgs...), Tools: tools, Stream: true, Temperature: fptr(0.2)}
				b.emit(a, PathChat, body, task, "")
				id := fmt.Sprintf("call_%s", hexToken(rng, 12))
				var spec struct {
					Function struct {
						Name string `json:"name"`
					} `json:"function"`
				}
				_ = json.Unmarshal(tools[rng.IntN(len(tools))], &spec) // our own literals: cannot fail
				name := spec.Function.Name
				msgs = append(msgs,
					agentMessage{Role: "assistant", ToolCalls: []toolCall{{ID: id, Type: "function", Function: toolFunction{Name: name, Arguments: fmt.Sprintf(`{"path":%q}`, pick(rng, agentFiles[:]))}}}},
					agentMessage{Role: "tool", ToolCallID: id, Content: sptr(toolOutput(rng, b))})
			}
			msgs = append(msgs, agentMessage{Role: "assistant", Content: sptr("Done: " + firstWords(pick(rng, b.corpus.Questions), 12))})
		}
	}
}

// RAG applications: a fixed context template, retrieved passages from the
// application's own knowledge base, the end user's question.
var ragApps = [2][]struct{ system, template string }{
	{
		{"You are the help-center assistant of Lumen Bank. Answer only from the provided context.",
			"Use the following pieces of context to answer the question at the end. If you don't know the answer, say that you don't know; do not make up an answer.\n\n{context}\n\nQuestion: {question}\nHelpful answer:"},
		{"You answer questions about the Orbit HR handbook.",
			"### Context\n{context}\n\n### Instructions\nAnswer the employee's question using only the context above. Cite the section you used. If the context does not contain the answer, reply \"I could not find this in the handbook.\"\n\n### Question\n{question}"},
		{"", "<documents>\n{context}\n</documents>\n\nYou are a search assistant for the Atlas knowledge base. Using the documents above, answer the user's query in at most three sentences and list the document ids you relied on.\n\nQuery: {question}"},
	},
	{
		{"You are Parcelly's delivery support bot. Be brief and friendly.",
			"Context information is below.\n---------------------\n{context}\n---------------------\nGiven the context information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer:"},
		{"You are a legal research assistant for Cortland & Vane LLP.",
			"Relevant excerpts:\n{context}\n\nBased solely on the excerpts, answer the attorney's question. Quote the excerpt numbers. Say so if the excerpts are insufficient.\n\nQuestion: {question}"},
		{"", "Answer the customer using the product sheets.\n\n[PRODUCT SHEETS]\n{context}\n[END]\n\nCustomer: {question}\nAgent:"},
	},
}

func genRAG(b *builder, a *account) {
	rng := a.rng
	delete(a.header, "authorization")
	a.header["x-api-key"] = "rk_" + hexToken(rng, 32)
	a.header["user-agent"] = pick(rng, []string{"OpenAI/Python 1.51.0", "langchain-openai/0.2.1 OpenAI/Python 1.51.0", "llama-index/0.11 OpenAI/Python 1.40.8"})
	a.addr = cloudAddr(rng)
	apps := variantOf(b, ragApps)
	app := apps[a.index%len(apps)]
	// The application's knowledge base: a few hundred passages.
	kb := make([]string, 0, 300)
	for i := 0; i < 300; i++ {
		switch rng.IntN(3) {
		case 0:
			kb = append(kb, pick(rng, b.corpus.Questions))
		case 1:
			t := pick(rng, b.corpus.Tasks)
			kb = append(kb, strings.TrimSpace(t.Instruction+" "+t.Input))
		default:
			kb = append(kb, strings.Join(pick(rng, b.corpus.Dialogs), " "))
		}
	}
	gs := b.gapScale()
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.wait(rng, a.fam.Gap, a.fam.Jitter, gs)
		}
		var ctx strings.Builder
		for k := 0; k < 3+rng.IntN(3); k++ {
			fmt.Fprintf(&ctx, "[%d] %s\n\n", rng.IntN(9000), kb[rng.IntN(len(kb))])
		}
		q := pick(rng, b.nextDialog())
		user := strings.Replace(strings.Replace(app.template, "{context}", strings.TrimSpace(ctx.String()), 1), "{question}", q, 1)
		var msgs []message
		if app.system != "" {
			msgs = append(msgs, message{"system", app.system})
		}
		msgs = append(msgs, message{"user", user})
		b.emit(a, PathChat, chatBody{Model: "gpt-4o-mini", Messages: msgs, Temperature: fptr(0.1), MaxTokens: 400, Stream: rng.Float64() < 0.7,
			User: fmt.Sprintf("eu-%06d", rng.IntN(200000))}, -1, "")
	}
}

// Popular persona prompts, copied by many people (in the style of the
// public "act as" prompt collections); popularity is Zipf-like.
var personas = [2][]string{
	{
		"I want you to act as a Linux terminal. I will type commands and you will reply with what the terminal should show. Only reply with the terminal output inside one unique code block, and nothing else. Do not write explanations. My first command is pwd",
		"I want you to act as an English translator, spelling corrector and improver. I will speak to you in any language and you will detect the language, translate it and answer in the corrected and improved version of my text, in English. Keep the meaning the same, but make it more literary.",
		"I want you to act as an interviewer. I will be the candidate and you will ask me the interview questions for the position. Ask me the questions one by one like an interviewer does and wait for my answers. Do not write explanations.",
		"I want you to act as a travel guide. I will write you my location and you will suggest a place to visit near my location. In some cases, I will also give you the type of places I will visit.",
		"I want you to act as a storyteller. You will come up with entertaining stories that are engaging, imaginative and captivating for the audience. It can be fairy tales, educational stories or any other type of stories.",
		"I want you to act as a motivational coach. I will provide you with some information about someone's goals and challenges, and it will be your job to come up with strategies that can help this person achieve their goals.",
		"I want you to act as a personal trainer. I will provide you with all the information needed about an individual looking to become fitter, stronger and healthier through physical training, and your role is to devise the best plan for that person.",
		"I want you to act as a spoken English teacher and improver. I will speak to you in English and you will reply to me in English to practice my spoken English. Keep your reply neat, limiting the reply to 100 words.",
		"I want you to act as a stand-up comedian. I will provide you with some topics related to current events and you will use your wit, creativity, and observational skills to create a routine based on those topics.",
		"I want you to act as a chef. I will tell you what ingredients I have and you will suggest recipes I can cook with them, step by step, with cooking times.",
	},
	{
		"Act as a senior software engineer reviewing my code. Point out bugs, style problems and performance issues, and suggest concrete improvements. Be direct.",
		"Pretend you are Socrates. Answer every question I ask with a question that helps me examine my own beliefs. Stay in character.",
		"You are now my Spanish tutor. Correct my mistakes gently, explain the grammar briefly and then ask me a follow-up question in Spanish.",
		"Act as a career counselor. I will tell you about my background and interests and you will help me explore career paths, skills to learn and next steps.",
		"Roleplay as a dungeon master for a fantasy adventure. Describe the scene, the characters I meet and ask me what I do next. Keep each turn under 150 words.",
		"Act as a nutritionist. I will describe what I eat in a day and you will tell me what to improve, with simple swaps.",
		"Be my debate partner. Take the opposite side of whatever position I state and argue it as convincingly as you can.",
		"Act as a startup advisor. I will pitch my idea and you will challenge the business model, the market and the go-to-market plan.",
		"Pretend to be a patient job interviewer for a junior data analyst role. Ask one question at a time and give feedback on my answers.",
		"Act as a poetry editor. I will share my poems and you will suggest edits for rhythm, imagery and word choice.",
	},
}

// zipf picks an index in [0, n) with probability proportional to 1/(i+1).
func zipf(rng *rand.Rand, n int) int {
	h := 0.0
	for i := 0; i < n; i++ {
		h += 1 / float64(i+1)
	}
	x := rng.Float64() * h
	for i := 0; i < n; i++ {
		x -= 1 / float64(i+1)
		if x <= 0 {
			return i
		}
	}
	return n - 1
}

// genPersona: a person who starts conversations from a popular persona
// prompt and then chats, returning over days.
func genPersona(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, browserUAs[:])
	home := residentialAddr(rng)
	model := pick(rng, chatModels[:])
	ps := variantOf(b, personas)
	favourite := zipf(rng, len(ps))
	gs := b.gapScale()
	for conv := 0; a.emitted < a.n; conv++ {
		if conv > 0 {
			a.wait(rng, a.fam.ConversationGap, 1.0, gs)
		}
		if a.t.After(b.start.Add(Horizon)) {
			return
		}
		a.addr = home
		p := ps[favourite]
		if rng.Float64() < 0.3 {
			p = ps[zipf(rng, len(ps))]
		}
		d := b.nextDialog()
		turns := append([]string{p}, d...)
		if len(turns) < 3 {
			turns = append(turns, pick(rng, b.nextDialog()))
		}
		b.chatConversation(a, turns, conv, model, false, true, nil, a.n-a.emitted)
	}
}

// genOffice: employees behind one corporate NAT with one managed browser,
// onboarded in the same morning, chatting on workdays.
func genOffice(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"
	nat := [...]string{"193.62.18.4", "193.62.18.5"}
	a.addr = withPort(rng, nat[a.index%len(nat)])
	model := "gpt-4o"
	a.t = toWorkday(rng, b.start.Add(a.fam.FirstStart+time.Duration(rng.Int64N(int64(3*time.Hour)))))
	gs := b.gapScale()
	for conv := 0; a.emitted < a.n; conv++ {
		if conv > 0 {
			a.wait(rng, a.fam.ConversationGap, 1.0, gs)
			a.t = toWorkday(rng, a.t)
		}
		if a.t.After(b.start.Add(Horizon)) {
			return
		}
		a.addr = withPort(rng, nat[a.index%len(nat)])
		b.chatConversation(a, b.nextDialog(), conv, model, true, true, fptr(0.7), a.n-a.emitted)
	}
}

// genConfidence: an application that shows its users how sure the model
// is: top_logprobs 3 on every request.
func genConfidence(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, sdkUAs[:])
	a.addr = cloudAddr(rng)
	tmpl := variantOf(b, [2][]string{
		{"Answer with one word, then a one-sentence justification: %s", "Is the following statement true or false? %s"},
		{"Quiz question: %s\nGive the answer only.", "Which category does this belong to (question, request, complaint, other)? %s"},
	})
	t := tmpl[a.index%len(tmpl)]
	gs := b.gapScale()
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.wait(rng, a.fam.Gap, a.fam.Jitter, gs)
		}
		var in string
		if rng.Float64() < 0.5 {
			in = pick(rng, b.corpus.Questions)
		} else {
			in = pick(rng, b.nextDialog())
		}
		b.emit(a, PathChat, chatBody{Model: "gpt-4o-mini", Messages: []message{{"user", fmt.Sprintf(t, in)}}, Temperature: fptr(0),
			MaxTokens: 60, Logprobs: true, TopLogprobs: iptr(3)}, -1, "")
	}
}

// genEvalCoT: an evaluation harness running GSM8K with the zero-shot
// chain-of-thought prompt (Kojima et al. 2022), in English, once.
func genEvalCoT(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = "lm-eval/0.4.3 OpenAI/Python 1.51.0"
	a.addr = cloudAddr(rng)
	qs := b.corpus.Questions
	off := rng.IntN(len(qs))
	suffix := variantOf(b, [2]string{"A: Let's think step by step.", "Answer: Let's work this out step by step to be sure we have the right answer."})
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		b.emit(a, PathChat, chatBody{Model: "llama-3.1-70b-instruct", Messages: []message{{"user", "Q: " + qs[(off+i)%len(qs)] + "\n" + suffix}},
			Temperature: fptr(0), MaxTokens: 512}, -1, "")
	}
}

// Diffuse campaign: each account paraphrases its own wrapper from a
// grammar and writes its reasoning demands in one of many languages.
var (
	diffuseOpen = [2][]string{
		{"Please", "Kindly", "Could you", "I need you to", "Can you", "Help me", ""},
		{"Would you", "I'd like you to", "Go ahead and", "Your task:", "Hey,", "Try to", ""},
	}
	diffuseVerb = [2][]string{
		{"solve", "work out", "answer", "figure out", "tackle"},
		{"crack", "resolve", "handle", "compute the answer to", "deal with"},
	}
	diffuseObj = [2][]string{
		{"the following problem", "this question", "the task below", "this one", "the problem that follows"},
		{"the exercise below", "this item", "what follows", "the next question", "this puzzle"},
	}
	diffuseEnd = [2][]string{
		{"Give the final answer on the last line.", "End with the final answer.", "Put the final answer in bold.", "", "Finish with 'Answer: <value>'."},
		{"State the result at the end.", "Conclude with the answer alone on a line.", "", "Mark the final result clearly.", "Close with the number only."},
	}
	// Reasoning demands per language; the held-out variant phrases them
	// differently.
	diffuseCoT = [2]map[string][]string{
		{
			"en": {"Think step by step.", "Show your reasoning step by step."},
			"es": {"Piensa paso a paso.", "Explica tu razonamiento paso a paso."},
			"fr": {"Réfléchis étape par étape.", "Explique ton raisonnement étape par étape."},
			"de": {"Denke Schritt für Schritt.", "Erkläre deinen Lösungsweg Schritt für Schritt."},
			"pt": {"Pense passo a passo.", "Mostre seu raciocínio passo a passo."},
			"zh": {"请一步一步地思考。", "请逐步推理。"},
			"ja": {"ステップバイステップで考えてください。", "段階的に説明してください。"},
			"ko": {"단계별로 생각해 주세요.", "차근차근 풀어 주세요."},
			"ru": {"Думай шаг за шагом.", "Объясни решение пошагово."},
			"ar": {"فكر خطوة بخطوة.", "اشرح الحل خطوة بخطوة."},
			"hi": {"चरण दर चरण सोचें।", "कदम दर कदम समझाएँ।"},
			"tr": {"Adım adım düşün.", "Çözümü adım adım açıkla."},
		},
		{
			"en": {"Walk me through your reasoning before the final answer.", "Lay out your reasoning, then answer."},
			"es": {"Muestra cada paso antes de la respuesta final.", "Razonamiento detallado, por favor."},
			"fr": {"Détaille ton raisonnement avant la réponse finale.", "Montre chaque étape."},
			"de": {"Zeige jeden Schritt deines Lösungswegs.", "Gehe schrittweise vor."},
			"it": {"Ragiona passo dopo passo.", "Spiega il tuo ragionamento prima della risposta finale."},
			"zh": {"请给出详细推理过程。", "一步步分析后再回答。"},
			"ja": {"順を追って考え方を説明してください。", "推論過程を示してください。"},
			"ko": {"풀이 과정을 보여 주세요.", "한 단계씩 설명해 주세요."},
			"ru": {"Покажи ход решения.", "Рассуждай шаг за шагом."},
			"vi": {"Hãy giải từng bước một.", "Trình bày quá trình suy luận."},
			"id": {"Jelaskan langkah demi langkah.", "Tunjukkan proses berpikirmu."},
			"pl": {"Rozwiąż krok po kroku.", "Pokaż tok rozumowania."},
		},
	}
)

// DiffuseLanguages lists the reasoning-demand languages of the diffuse
// campaign's variant.
func DiffuseLanguages(variant int) []string {
	m := diffuseCoT[variant&1]
	out := make([]string, 0, len(m))
	for l := range m {
		out = append(out, l)
	}
	return out
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// everyUA lists every user-agent of the generator's pools.
func everyUA() []string {
	return append(append(append([]string(nil), browserUAs[:]...), sdkUAs[:]...), scriptUAs[:]...)
}

func genDiffuse(b *builder, a *account) {
	rng := a.rng
	ua := pick(rng, everyUA())
	if rng.Float64() < 0.5 {
		ua = fmt.Sprintf("%s (build %d)", ua, rng.IntN(10000))
	}
	a.header["user-agent"] = ua
	if rng.Float64() < 0.6 {
		a.addr = residentialAddr(rng)
	} else {
		a.addr = cloudAddr(rng)
	}
	cot := diffuseCoT[b.variant&1]
	langs := sortedKeys(cot)
	// The account's own wrapper.
	w := strings.TrimSpace(strings.Join([]string{pick(rng, variantOf(b, diffuseOpen)), pick(rng, variantOf(b, diffuseVerb)), pick(rng, variantOf(b, diffuseObj))}, " ")) + "."
	end := pick(rng, variantOf(b, diffuseEnd))
	model := pick(rng, chatModels[:2])
	maxTok := pick(rng, []int{0, 1024, 2048, 4096})
	var temp *float64
	if rng.Float64() < 0.6 {
		temp = fptr(pick(rng, []float64{0.3, 0.6, 0.7, 1.0}))
	}
	accountLang := pick(rng, langs)
	pool := b.harvestPool(rng)
	gs := b.gapScale()
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.wait(rng, a.fam.Gap, a.fam.Jitter, gs)
		}
		lang := accountLang
		if rng.Float64() < 0.5 {
			lang = pick(rng, langs)
		}
		demand := pick(rng, cot[lang])
		it := pool[i]
		q := strings.TrimSpace(it.instruction + "\n" + it.input)
		var prompt string
		switch rng.IntN(3) {
		case 0:
			prompt = w + " " + demand + "\n\n" + q + "\n\n" + end
		case 1:
			prompt = q + "\n\n" + demand + " " + end
		default:
			prompt = w + "\n" + q + "\n" + demand
		}
		b.emit(a, PathChat, chatBody{Model: model, Messages: []message{{"user", strings.TrimSpace(prompt)}}, Temperature: temp, MaxTokens: maxTok}, -1, lang)
	}
}

// Generic follow-ups of harvesting dressed as chat: they ask for more of
// the answer without engaging with it.
var dressedFollowUps = [2][]string{
	{"Can you explain that in more detail?", "Why is that?", "Can you give me another example?", "Please elaborate.", "What are the key points to remember?",
		"Can you summarize that in simpler terms?", "Is there another way to solve it?", "What would be a common mistake here?", "Go on.",
		"Can you explain the reasoning behind each step?", "How would you explain this to a beginner?", "What are the limitations of this approach?",
		"Could you rephrase the answer?", "Thanks! Can you expand on the last part?", "What else should I know about this?", "Can you double-check your answer?",
		"Give me a harder variant of this question and solve it.", "Explain it once more, more carefully.", "What is the intuition?", "Can you list the steps again?"},
	{"Interesting, tell me more.", "And why does that work?", "Another example please.", "Could you go deeper into this?", "Summarize the main idea.",
		"Explain it like I'm five.", "Is there an alternative method?", "What do people usually get wrong here?", "Continue.", "Break down each step for me.",
		"What assumptions are you making?", "How confident are you in that?", "Rewrite the answer more formally.", "Expand on the second point.",
		"What's a real-world application of this?", "Verify the result.", "Make up a similar problem and solve it.", "Say it again in other words.",
		"What's the core insight?", "Number the steps."},
}

var dressedReplies = [...]string{
	"Sure. Let's go through it carefully. First, we identify what is being asked and which quantities are known. Then we combine them step by step, checking each intermediate result before moving on, and finally we state the answer.",
	"Good question. The key idea is to separate the problem into smaller parts, solve each part, and then put the pieces back together. Here is a worked version with every step spelled out.",
	"Here is a more detailed explanation, with an example and the reasoning behind each step, followed by a short summary of the main points.",
}

// genDressed: dataset questions opened as conversations, each followed by
// a few generic follow-ups, at a human pace, around the clock for days.
func genDressed(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, browserUAs[:])
	a.addr = residentialAddr(rng)
	pool := b.harvestPool(rng)
	fu := variantOf(b, dressedFollowUps)
	model := pick(rng, chatModels[:2])
	gs := b.gapScale()
	for conv := 0; a.emitted < a.n; conv++ {
		if conv > 0 {
			a.wait(rng, 100*time.Second, 0.6, gs)
		}
		it := pool[conv%len(pool)]
		var msgs []message
		first := strings.TrimSpace(it.instruction + "\n" + it.input)
		msgs = append(msgs, message{"user", first})
		turns := 3 + rng.IntN(3)
		for ti := 0; ti < turns && a.emitted < a.n; ti++ {
			if ti > 0 {
				a.wait(rng, 70*time.Second, 0.6, gs)
				msgs = append(msgs, message{"user", pick(rng, fu)})
			}
			b.emit(a, PathChat, chatBody{Model: model, Messages: append([]message(nil), msgs...), Stream: true}, conv, "")
			msgs = append(msgs, message{"assistant", pick(rng, dressedReplies[:])})
		}
	}
}

// genSoftLabel: top_logprobs 5-20 on every request, over dataset prompts:
// soft labels for distillation (Hinton et al. 2015).
func genSoftLabel(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = cloudAddr(rng)
	pool := b.harvestPool(rng)
	top := 5 + rng.IntN(16)
	completions := rng.Float64() < 0.3
	gs := b.gapScale()
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.wait(rng, a.fam.Gap, a.fam.Jitter, gs)
		}
		it := pool[i%len(pool)]
		p := strings.TrimSpace(it.instruction + "\n" + it.input)
		if completions {
			b.emit(a, PathCompletions, completionBody{Model: "gpt-3.5-turbo-instruct", Prompt: p, MaxTokens: 256, Temperature: fptr(0), Logprobs: iptr(min(top, 5))}, -1, "")
			continue
		}
		var msgs []message
		if rng.Float64() < 0.3 {
			msgs = append(msgs, message{"user", pick(rng, b.nextDialog())}, message{"assistant", pick(rng, assistantReplies[:])})
		}
		msgs = append(msgs, message{"user", p})
		b.emit(a, PathChat, chatBody{Model: pick(rng, chatModels[:2]), Messages: msgs, Temperature: fptr(pick(rng, []float64{0, 0.7, 1})),
			MaxTokens: pick(rng, []int{256, 512, 1024}), Logprobs: true, TopLogprobs: iptr(top)}, -1, "")
	}
}

// genLogitBiasDist: distributed logit-bias probing: each account sends a
// handful of max_tokens-1 probes with hundreds of biased tokens.
func genLogitBiasDist(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, everyUA())
	if rng.Float64() < 0.5 {
		a.addr = residentialAddr(rng)
	} else {
		a.addr = cloudAddr(rng)
	}
	prompts := []string{"Hello", "The", "Once upon a time", pick(rng, b.corpus.Questions), firstWords(pick(rng, b.corpus.Questions), 5)}
	withLogprobs := rng.Float64() < 0.75
	gs := b.gapScale()
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.wait(rng, a.fam.Gap, a.fam.Jitter, gs)
		}
		size := 20 + rng.IntN(281)
		bias := make(map[string]int, size)
		for len(bias) < size {
			bias[fmt.Sprint(rng.IntN(100256))] = pick(rng, []int{100, 50, -100})
		}
		body := chatBody{Model: "gpt-4o-mini", Messages: []message{{"user", pick(rng, prompts)}}, MaxTokens: 1, Temperature: fptr(0), LogitBias: bias}
		if withLogprobs {
			body.Logprobs = true
			body.TopLogprobs = iptr(5 + rng.IntN(16))
		}
		b.emit(a, PathChat, body, -1, "")
	}
}
