package watermark

// synonymTable is the embedded synonym table: one set per line,
//
//	POS[SLOTS] MEMBER:WEIGHT MEMBER:WEIGHT ...
//
// POS is r (invariant word: adverbs), a (adjective, base form only), A
// (adjective with -er/-est forms), n (noun: singular, plural) or v (verb:
// base, 3rd person singular, past, past participle, -ing). SLOTS, when
// present, lists the forms that may be substituted (r/a: base; A: base er
// est; n: sg pl; v: base s past pp ing); a form is left out when it is also a
// common word of another part of speech with another meaning ("purchase" is
// a noun too, so only "bought/purchased" and "buying/purchasing" are
// substituted). A MEMBER with irregular forms spells them with "|": A
// base|er|est, n sg|pl, v base|past|pp or base|past|pp|ing; missing forms
// follow the regular spelling rules (inflect.go). WEIGHT is the member's
// approximate relative frequency in general English prose: the prior of
// the frequency-preserving assignment (contexts.go), which takes each
// member's share from the context statistics and falls back on these
// weights for a form the statistics never saw.
//
// Curation rules (checked by the tests where they can be): every member
// means the same as the others in nearly every context; no function words
// (prepositions, determiners, pronouns, modals, quantifiers; interjections
// such as "yes/yeah" and clipped forms such as "photo" or "info" are
// content words here); no words whose
// common senses differ ("odd" is also "not even", "fine" is also a penalty,
// "right" is also a direction); no spelling variants (an inconsistent
// spelling is visible to anyone reading the text); a surface form that
// belongs to two sets is dropped from both by the lexicon builder. When the
// members of a set differ in their a/an onset ("an expensive" / "a costly"),
// the builder flags the set and the marker never substitutes it after "a" or
// "an".
const synonymTable = `
# adverbs: connectives and sentence adverbs
r therefore:50 thus:30 hence:12 consequently:8
r furthermore:40 moreover:35 additionally:25
r nevertheless:55 nonetheless:45
r likewise:40 similarly:60
r perhaps:55 maybe:45
r yes:75 yeah:25
r hello:40 hi:35 hey:25
r usually:45 typically:30 normally:25
r often:70 frequently:30
r sometimes:85 occasionally:15
r seldom:30 rarely:70
r hardly:45 barely:40 scarcely:15
r almost:60 nearly:35 virtually:5
r approximately:55 roughly:45
r mainly:30 mostly:35 largely:20 primarily:15
r especially:65 particularly:35
r solely:50 exclusively:50
r certainly:60 definitely:40
r exactly:75 precisely:25
r quickly:70 rapidly:20 swiftly:10
r suddenly:85 abruptly:15
r gradually:80 progressively:20
r immediately:75 instantly:25
r completely:50 entirely:30 totally:20
r basically:45 essentially:40 fundamentally:15
r eventually:60 ultimately:40
r initially:55 originally:45
r previously:75 formerly:25
r fortunately:50 luckily:35 thankfully:15
r unfortunately:90 regrettably:10
r surprisingly:85 astonishingly:15
r interestingly:80 curiously:20
r obviously:70 evidently:30
r apparently:75 seemingly:25
r undoubtedly:60 unquestionably:15 doubtless:25
r honestly:70 frankly:30
r significantly:50 substantially:25 considerably:25
r slightly:80 somewhat:20
r extremely:75 exceedingly:10 exceptionally:15
r incredibly:70 unbelievably:30
r tremendously:35 enormously:35 immensely:30
r constantly:60 continually:25 perpetually:15
r separately:60 individually:40
r simultaneously:80 concurrently:20
r relatively:80 comparatively:20
r partly:55 partially:45
r afterwards:50 subsequently:50
r anyway:90 anyhow:10
r loudly:85 noisily:15
r carefully:85 cautiously:15
r easily:85 readily:15
r properly:60 correctly:40
r regularly:75 routinely:25
r terribly:55 awfully:30 dreadfully:15
r deeply:80 profoundly:20
r remarkably:60 notably:40
r openly:60 publicly:40
r secretly:70 covertly:30
r overly:70 excessively:30
r vigorously:60 energetically:40
r eagerly:70 keenly:30
r wisely:70 sensibly:30
r bravely:60 courageously:40
r politely:70 courteously:30

# adjectives
a additional:50 extra:50
A big|bigger|biggest:60 large:40
a huge:55 enormous:30 immense:15
a beautiful:70 lovely:30
a ugly:70 unattractive:30
A smart:55 clever:45
a stupid:60 foolish:40
a sad:75 unhappy:25
a scared:60 frightened:40
a terrible:45 awful:30 horrible:20 dreadful:5
a wonderful:50 fantastic:35 terrific:15
a amazing:55 incredible:35 astonishing:10
a excellent:60 outstanding:25 superb:15
a delicious:70 tasty:30
a strange:65 weird:35
a unusual:70 uncommon:30
a difficult:70 challenging:30
a rapid:70 swift:30
a important:65 significant:35
a vital:45 crucial:55
a main:50 primary:35
a basic:70 fundamental:30
a genuine:60 authentic:40
a modern:70 contemporary:30
a wealthy:70 affluent:30
a expensive:75 costly:25
a loud:75 noisy:25
a amusing:55 humorous:45
a boring:75 tedious:25
a fascinating:60 intriguing:40
a exciting:75 thrilling:25
a scary:60 frightening:40
a dangerous:80 hazardous:20
a careful:75 cautious:25
a polite:75 courteous:25
a rude:70 impolite:30
a honest:80 truthful:20
a brave:70 courageous:30
a shy:80 timid:20
a famous:80 renowned:20
a helpful:60 useful:40
a useless:60 pointless:40
a feasible:55 viable:45
a obvious:75 evident:25
a sufficient:55 adequate:45
a insufficient:55 inadequate:45
a previous:85 preceding:15
a annual:75 yearly:25
a sudden:80 abrupt:20
a tired:75 weary:25
a annoyed:55 irritated:45
a excited:80 thrilled:20
a grateful:60 thankful:40
a astonished:40 amazed:60
a puzzled:45 perplexed:30 baffled:25
a jealous:65 envious:35
a lonely:85 lonesome:15
a talented:70 gifted:30
a illegal:75 unlawful:25
a similar:85 comparable:15
a harmful:75 detrimental:25
a beneficial:70 advantageous:30
a accurate:60 precise:40
a appropriate:65 suitable:35
a relevant:80 pertinent:20
a reliable:75 dependable:25
a messy:70 untidy:30
a enjoyable:45 pleasant:55
a unpleasant:80 disagreeable:20
a cute:65 adorable:35
a gigantic:70 colossal:30
a tiny:85 minuscule:15
a incorrect:70 inaccurate:30
a unnecessary:75 needless:25
a sturdy:60 robust:40
a fragile:70 delicate:30
a grumpy:60 cranky:40
a stunning:60 gorgeous:40
a horrific:50 horrendous:50
a tranquil:55 serene:45
a miserable:80 wretched:20
a ferocious:55 fierce:45
a magnificent:60 splendid:40
a gloomy:70 dismal:30
a hectic:60 frantic:40
a lucky:80 fortunate:20
a joyful:60 cheerful:40
a unlucky:75 unfortunate:25
a mandatory:55 compulsory:45
a vague:70 unclear:30

# nouns
n kid:45 child|children:55
n mom:55 mother:45
n dad:55 father:45
n grandma:55 grandmother:45
n grandpa:55 grandfather:45
n error:55 mistake:45
n choice:50 option:50
n method:60 technique:40
n photo:45 photograph:20 picture:35
n[sg] information:85 info:15
n problem:65 issue:35
n[sg] question:80 query:20
n trip:85 journey:15
n movie:85 film:15
n phone:85 telephone:15
n bike:55 bicycle:45
n fridge:60 refrigerator:40
n exam:70 examination:30
n lab:60 laboratory:40
n doctor:90 physician:10
n lawyer:80 attorney:20
n car:92 automobile:8
n[sg] trash:45 garbage:45 rubbish:10
n sofa:50 couch:50
n taxi:65 cab:35
n[pl] pant:55 trouser:45
n customer:75 client:25
n buyer:85 purchaser:15
n seller:70 vendor:30
n guest:65 visitor:35
n dinner:90 supper:10
n burger:60 hamburger:40
n example:85 instance:15
n discount:85 reduction:15
n[sg] permission:85 consent:15
n baby:85 infant:15
n teenager:65 teen:35
n jail:50 prison:50
n[sg] advice:80 guidance:20
n illness:60 sickness:40
n disadvantage:60 drawback:30 downside:10
n hallway:65 corridor:35
n[sg] sunshine:60 sunlight:40
n[sg] dawn:75 daybreak:25
n[sg] noon:70 midday:30
n danger:95 peril:5
n winner:95 victor:5
n puppy:85 pup:15
n vegetable:85 veggie:15
n ability:80 capability:20
n career:65 profession:35
n song:90 tune:10
n[sg] math:80 mathematics:20
n enemy:90 foe:10

# verbs
v[ing] talk:75 speak:25
v[past,pp,ing] buy|bought|bought:70 purchase:30
v[past,pp,ing] need:70 require:30
v[s,past,pp,ing] help:75 assist:25
v[base,s,ing] choose|chose|chosen:60 select:40
v[ing] use|used|used:85 utilize:15
v[past,pp,ing] try|tried|tried:75 attempt:25
v[past,pp,ing] finish:50 complete:50
v[past,pp] build|built|built:75 construct:25
v[base,s,past,pp] understand|understood|understood:90 comprehend:10
v[past,pp,ing] allow:70 permit|permitted|permitted|permitting:30
v[past,pp,ing] reduce:60 decrease:40
v[base,s,past,pp] gather:50 collect:50
v[past,pp,ing] shout:60 yell:40
v[past,pp,ing] cry|cried|cried:75 weep|wept|wept:25
v[base,s,ing] eat|ate|eaten:85 consume:15
v examine:60 inspect:40
v[base,s,past,pp] suggest:75 propose:25
v[past,pp,ing] reply|replied|replied:60 respond:40
v calculate:75 compute:25
v[past,pp,ing] connect:70 link:30
v[base,s,ing] throw|threw|thrown:75 toss:25
v[base,s,ing] achieve:65 accomplish:35
v obtain:55 acquire:45
v[past,pp,ing] remember:80 recall:20
v[past,pp,ing] notice:70 observe:30
v[past,pp] live:85 reside:15
v[s,past,pp,ing] happen:70 occur|occurred|occurred|occurring:30
v[past,pp,ing] change:60 alter:25 modify:15
v[past,pp,ing] rent:70 lease:30
v hire:60 employ:40
v confirm:60 verify:40
v[base,s,ing] assume:60 suppose:40
v[ing] predict:75 forecast|forecast|forecast:25
v[past,pp,ing] protect:80 safeguard:20
v[past,pp,ing] stare:60 gaze:40
v[past,pp,ing] wander:60 roam:40
v[past,pp,ing] shiver:60 tremble:40
v[past,pp,ing] scream:60 shriek:40
v[past,pp,ing] rush:60 hurry:40
v[past,pp,ing] vanish:50 disappear:50
`
