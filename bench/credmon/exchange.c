// bench/credmon/exchange.c - what replacing many small files costs the file system, three
// ways, outside credkeeper: a new temporary file renamed over each file (what a pass did
// before spares), a new file exchanged with each (renameat2 RENAME_EXCHANGE, the old one
// kept as the spare), and the spare written over and exchanged (a later pass).
//
//   gcc -O2 -o /tmp/exchange bench/credmon/exchange.c
//   /tmp/exchange DIR N setup            N directories of box.use + box.top (~1 KB each)
//   /tmp/exchange DIR N rename|exchange  one replacement of every file, timed
//   /tmp/exchange DIR N reuse            the same over spares (run `exchange` on DIR first)
//
// Each run: write all new contents, syncfs, place all, syncfs; times printed per phase,
// with the process's user and system CPU. Use a fresh DIR for each run, and wait a minute
// after removing files on ext4 without a journal (new inodes skip recently freed ones).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/resource.h>
#include <time.h>
#include <errno.h>
// usage: ex ROOT N mode(setup|rename|exchange|reuse)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){
  const char*root=v[1];int n=atoi(v[2]);const char*mode=v[3];
  char buf[1200];memset(buf,'a',sizeof buf);buf[1199]='\n';
  char d[512],p[600],t[600];
  if(!strcmp(mode,"setup")){mkdir(root,0755);
    for(int i=0;i<n;i++){snprintf(d,sizeof d,"%s/u%d",root,i);mkdir(d,0700);
      const char*fs[]={"box.use","box.top"};
      for(int k=0;k<2;k++){snprintf(p,sizeof p,"%s/%s",d,fs[k]);int fd=open(p,O_WRONLY|O_CREAT|O_TRUNC,0600);write(fd,buf,1000+k*10);close(fd);}}
    sync();return 0;}
  int ex=!strcmp(mode,"exchange")||!strcmp(mode,"reuse");int reuse=!strcmp(mode,"reuse");
  double t0=now();int fd0=open(root,O_RDONLY);
  for(int i=0;i<n;i++){snprintf(d,sizeof d,"%s/u%d",root,i);
    const char*fs[]={"box.use","box.top"};
    for(int k=0;k<2;k++){
      if(ex) snprintf(t,sizeof t,"%s/.%s.spare",d,fs[k]); else snprintf(t,sizeof t,"%s/.%s.%d.tmp",d,fs[k],i);
      int fd;
      if(reuse){fd=open(t,O_WRONLY|O_CREAT,0600);}
      else fd=open(t,O_WRONLY|O_CREAT|O_EXCL,0600);
      if(fd<0){perror(t);return 1;}
      struct stat st;fstat(fd,&st);
      pwrite(fd,buf,1000+k*10+(i%7),0); if(reuse) ftruncate(fd,1000+k*10+(i%7));
      close(fd);}}
  syncfs(fd0);double t1=now();
  for(int i=0;i<n;i++){snprintf(d,sizeof d,"%s/u%d",root,i);
    const char*fs[]={"box.use","box.top"};
    for(int k=0;k<2;k++){snprintf(p,sizeof p,"%s/%s",d,fs[k]);
      if(ex) snprintf(t,sizeof t,"%s/.%s.spare",d,fs[k]); else snprintf(t,sizeof t,"%s/.%s.%d.tmp",d,fs[k],i);
      int r= ex? renameat2(AT_FDCWD,t,AT_FDCWD,p,RENAME_EXCHANGE): rename(t,p);
      if(r){perror("rename");return 1;}}}
  syncfs(fd0);double t2=now();
  struct rusage ru;getrusage(RUSAGE_SELF,&ru);
  printf("%s n=%d write+sync %.0f ms, rename+sync %.0f ms, total %.0f ms, user %.0f sys %.0f ms\n",mode,n,(t1-t0)*1e3,(t2-t1)*1e3,(t2-t0)*1e3,ru.ru_utime.tv_sec*1e3+ru.ru_utime.tv_usec/1e3,ru.ru_stime.tv_sec*1e3+ru.ru_stime.tv_usec/1e3);
}
