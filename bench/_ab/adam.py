import torch, time, statistics, sys
torch.set_num_threads(int(sys.argv[1]))
sizes=[(512,512)]*32+[(1408,512)]*24+[(3072,512)]*8+[(2700,512)]*2+[(512,)]*17
res={}
for kind in ['default','foreach','fused']:
    torch.manual_seed(0)
    ps=[torch.nn.Parameter(torch.randn(*s)) for s in sizes]
    for p in ps: p.grad=torch.randn_like(p)
    kw={'default':{}, 'foreach':{'foreach':True}, 'fused':{'fused':True}}[kind]
    opt=torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, **kw)
    opt.step()
    ts=[]
    for _ in range(5):
        t=time.perf_counter(); opt.step(); ts.append(time.perf_counter()-t)
    res[kind]=statistics.median(ts)
print({k: f'{v*1e3:.0f} ms' for k,v in res.items()}, sum(torch.Size(s).numel() for s in sizes)/1e6, 'M params')
